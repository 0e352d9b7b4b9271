#!/usr/bin/env python3
"""Interop peer: a Python asyncua OPC UA server with an "unusual" address space.

Usage: .venv/bin/python tests/peers/asyncua_server.py PORT [SHIFT]
SHIFT (default 0) registers that many more namespaces first, moving the test namespace to a
higher index: a restart with another SHIFT is a server whose namespace indexes changed.
Prints its endpoint URL on stdout once it accepts connections; runs until killed.

The nodes live in a namespace registered third (index 4, not the customary 2) with an odd URI,
and use string, numeric, GUID and opaque node ids. Values and source timestamps are fixed, so
the test knows exactly what must arrive; two counters change every 100 ms (Counter in a
pattern that tells whether a deadband filter is applied). The same node table
is served by tests/peers/node_opcua_server.js (see tests/interop.rs for the expected values).
"""

import asyncio
import datetime
import math
import sys
import uuid

from asyncua import Server, ua
from asyncua.common.structures104 import new_struct, new_struct_field

NS_URI = "urn:interop:odd namespace/ä"
TS = datetime.datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=datetime.timezone.utc)


async def main(port: int, shift: int) -> None:
    server = Server()
    await server.init()
    url = f"opc.tcp://127.0.0.1:{port}/"
    server.set_endpoint(url)
    server.set_server_name("aas-gateway interop peer (asyncua)")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    # Occupy indexes 2 and 3 so that ns=2 guesses break: only nsu= ids find the nodes.
    await server.register_namespace("urn:interop:unused-a")
    await server.register_namespace("urn:interop:unused-b")
    for i in range(shift):
        await server.register_namespace(f"urn:interop:shift-{i}")
    idx = await server.register_namespace(NS_URI)
    objects = server.nodes.objects
    folder = await objects.add_object(ua.NodeId("Interop", idx), ua.QualifiedName("Interop", idx))

    struct_node, _ = await new_struct(
        server,
        idx,
        "InteropStruct",
        [
            new_struct_field("Speed", ua.VariantType.Double),
            new_struct_field("Name", ua.VariantType.String),
            new_struct_field("Active", ua.VariantType.Boolean),
        ],
    )
    await server.load_data_type_definitions()
    custom = ua.InteropStruct(Speed=12.5, Name="spindle", Active=True)

    V = ua.VariantType
    nodes = [
        (ua.NodeId("Types/Boolean", idx), ua.Variant(True, V.Boolean)),
        (ua.NodeId("Types/SByte", idx), ua.Variant(-128, V.SByte)),
        (ua.NodeId("Types/Byte", idx), ua.Variant(255, V.Byte)),
        (ua.NodeId("Types/Int16", idx), ua.Variant(-32768, V.Int16)),
        (ua.NodeId("Types/UInt16", idx), ua.Variant(65535, V.UInt16)),
        (ua.NodeId("Types/Int32", idx), ua.Variant(-2147483648, V.Int32)),
        (ua.NodeId("Types/UInt32", idx), ua.Variant(4294967295, V.UInt32)),
        (ua.NodeId("Types/Int64", idx), ua.Variant(-9223372036854775808, V.Int64)),
        (ua.NodeId("Types/UInt64", idx), ua.Variant(18446744073709551615, V.UInt64)),
        (ua.NodeId("Types/Float", idx), ua.Variant(3.5, V.Float)),
        (ua.NodeId("Types/Double", idx), ua.Variant(0.1 + 0.2, V.Double)),
        (ua.NodeId("Types/DoubleNaN", idx), ua.Variant(math.nan, V.Double)),
        (ua.NodeId("Types/DoublePosInf", idx), ua.Variant(math.inf, V.Double)),
        (ua.NodeId("Types/FloatNegInf", idx), ua.Variant(-math.inf, V.Float)),
        (ua.NodeId("Types/String", idx), ua.Variant('Grüße "quoted" ✓', V.String)),
        (
            ua.NodeId("Types/DateTime", idx),
            ua.Variant(datetime.datetime(2024, 2, 29, 12, 34, 56, 789000, tzinfo=datetime.timezone.utc), V.DateTime),
        ),
        (
            ua.NodeId(uuid.UUID("72962B91-FA75-4AE6-8D28-B404DC7DAF63"), idx),
            ua.Variant(uuid.UUID("12345678-9abc-def0-1234-56789abcdef0"), V.Guid),
        ),
        (ua.NodeId(b"\x01\x02\x03", idx, ua.NodeIdType.ByteString), ua.Variant(b"\x00\x01\xfe\xff", V.ByteString)),
        (ua.NodeId(1001, idx), ua.Variant(ua.LocalizedText("Hallo Welt", "de"), V.LocalizedText)),
        (ua.NodeId(1002, idx), ua.Variant(ua.StatusCode(ua.StatusCodes.BadSensorFailure), V.StatusCode)),
        (ua.NodeId("Types/DoubleArray", idx), ua.Variant([1.5, -2.25, 3e10], V.Double)),
        (ua.NodeId("Types/Int32Array", idx), ua.Variant([-1, 0, 2147483647], V.Int32)),
        (ua.NodeId("Types/StringArray", idx), ua.Variant(["a", "b c"], V.String)),
        (ua.NodeId("Types/Range", idx), ua.Variant(ua.Range(Low=0.5, High=100.0), V.ExtensionObject)),
        (ua.NodeId("Types/Custom", idx), ua.Variant(custom, V.ExtensionObject)),
    ]
    for node_id, variant in nodes:
        name = str(node_id.Identifier).replace("Types/", "")
        datatype = struct_node.nodeid if node_id.Identifier == "Types/Custom" else None
        var = await folder.add_variable(node_id, ua.QualifiedName(name, idx), variant, datatype=datatype)
        await var.write_value(ua.DataValue(variant, ua.StatusCode(ua.StatusCodes.Good), TS, TS))

    uncertain = await folder.add_variable(ua.NodeId("Status/Uncertain", idx), "Uncertain", 20.5)
    await uncertain.write_value(
        ua.DataValue(ua.Variant(20.5, V.Double), ua.StatusCode(ua.StatusCodes.UncertainSensorNotAccurate), TS, TS)
    )
    bad = await folder.add_variable(ua.NodeId("Status/Bad", idx), "Bad", -1.0)
    await bad.write_value(ua.DataValue(ua.Variant(-1.0, V.Double), ua.StatusCode(ua.StatusCodes.BadSensorFailure), TS, TS))

    counter = await folder.add_variable(ua.NodeId("Counter", idx), "Counter", ua.Variant(0, V.UInt32))
    counter_read = await folder.add_variable(ua.NodeId("CounterRead", idx), "CounterRead", ua.Variant(0, V.UInt32))

    async with server:
        print(url, flush=True)
        n = 0
        while True:
            await asyncio.sleep(0.1)
            n += 1
            # +1, +1, +8, +1, +1, +8, ...: with an absolute deadband of 2.5 only the +8 steps
            # (the multiples of 10) may be reported, whether the server compares with the last
            # reported value (OPC UA Part 4) or with the last sample (asyncua 2.1 does).
            await counter.write_value(ua.Variant(10 * (n // 3) + n % 3, V.UInt32))
            await counter_read.write_value(ua.Variant(n, V.UInt32))


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 0))
