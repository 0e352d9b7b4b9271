"""Independent check of the simulator with the Python asyncua client (PyPI asyncua).

Browses everything under Objects/Factory and reads every variable; prints one JSON list of
{node, browse_name, status, variant, is_array} to stdout. Exits non-zero on any client error.
Usage: python asyncua_read_all.py opc.tcp://127.0.0.1:PORT/
"""
import asyncio
import json
import sys

from asyncua import Client, ua


async def main(url: str) -> None:
    async with Client(url=url, timeout=10) as client:
        ns = await client.get_namespace_index("urn:opcua-sim:factory")
        factory = client.get_node(ua.NodeId("Factory", ns))
        found = []

        async def walk(node, depth):
            for child in await node.get_children():
                node_class = await child.read_node_class()
                if node_class == ua.NodeClass.Variable:
                    dv = await child.read_data_value(raise_on_bad_status=False)
                    name = (await child.read_browse_name()).Name
                    found.append({
                        "node": child.nodeid.to_string(),
                        "browse_name": name,
                        "status": dv.StatusCode.name,
                        "variant": dv.Value.VariantType.name if dv.Value is not None else None,
                        "is_array": bool(dv.Value is not None and dv.Value.is_array),
                    })
                    # Properties (nameplate) hang below variables' parent objects; walk objects only.
                elif node_class == ua.NodeClass.Object and depth < 5:
                    await walk(child, depth + 1)

        await walk(factory, 0)
        print(json.dumps(found))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
