#!/usr/bin/env node
// Interop peer: a node-opcua OPC UA server with the same node table as asyncua_server.py.
//
// Usage: node tests/peers/node_opcua_server.js PORT
// Prints its endpoint URL on stdout once it accepts connections; runs until killed.
// node-opcua is installed in tests/peers/node-opcua/ by `.ci/peers.sh install` (npm ci).
"use strict";

const path = require("path");
const os = require("os");
const {
  OPCUAServer,
  OPCUACertificateManager,
  Variant,
  DataType,
  VariantArrayType,
  StatusCodes,
  LocalizedText,
  MessageSecurityMode,
  SecurityPolicy,
  coerceNodeId,
} = require(path.join(__dirname, "node-opcua", "node_modules", "node-opcua"));

const NS_URI = "urn:interop:odd namespace/ä";
const TS = new Date(Date.UTC(2024, 0, 2, 3, 4, 5, 678));

async function main(port) {
  const pki = path.join(os.tmpdir(), "aas-gateway-node-opcua-peer-pki");
  const server = new OPCUAServer({
    port,
    hostname: "127.0.0.1",
    resourcePath: "/",
    serverCertificateManager: new OPCUACertificateManager({ rootFolder: pki, automaticallyAcceptUnknownCertificate: true }),
    securityModes: [MessageSecurityMode.None, MessageSecurityMode.Sign, MessageSecurityMode.SignAndEncrypt],
    securityPolicies: [SecurityPolicy.None, SecurityPolicy.Basic256Sha256, SecurityPolicy.Aes128_Sha256_RsaOaep],
    allowAnonymous: true,
    // Tight operation limits: the gateway must read them and batch its calls (30 monitored
    // items need 6 CreateMonitoredItems calls); a call over a limit fails as a whole.
    serverCapabilities: {
      operationLimits: { maxMonitoredItemsPerCall: 5, maxNodesPerRead: 5, maxNodesPerBrowse: 5 },
    },
    buildInfo: { productName: "aas-gateway interop peer (node-opcua)" },
  });
  await server.initialize();
  const addressSpace = server.engine.addressSpace;
  // Occupy the next indexes so that ns=2 guesses break: only nsu= ids find the nodes.
  addressSpace.registerNamespace("urn:interop:unused-a");
  addressSpace.registerNamespace("urn:interop:unused-b");
  const ns = addressSpace.registerNamespace(NS_URI);
  const folder = ns.addObject({
    organizedBy: addressSpace.rootFolder.objects,
    browseName: "Interop",
    nodeId: "s=Interop",
  });

  const scalar = (dataType, value) => new Variant({ dataType, arrayType: VariantArrayType.Scalar, value });
  const array = (dataType, value) => new Variant({ dataType, arrayType: VariantArrayType.Array, value });
  const range = addressSpace.constructExtensionObject(coerceNodeId("i=884"), { low: 0.5, high: 100 });
  const nodes = [
    ["s=Types/Boolean", "Boolean", scalar(DataType.Boolean, true)],
    ["s=Types/SByte", "SByte", scalar(DataType.SByte, -128)],
    ["s=Types/Byte", "Byte", scalar(DataType.Byte, 255)],
    ["s=Types/Int16", "Int16", scalar(DataType.Int16, -32768)],
    ["s=Types/UInt16", "UInt16", scalar(DataType.UInt16, 65535)],
    ["s=Types/Int32", "Int32", scalar(DataType.Int32, -2147483648)],
    ["s=Types/UInt32", "UInt32", scalar(DataType.UInt32, 4294967295)],
    // 64-bit integers travel as [high, low] 32-bit words in node-opcua.
    ["s=Types/Int64", "Int64", scalar(DataType.Int64, [0x80000000, 0])],
    ["s=Types/UInt64", "UInt64", scalar(DataType.UInt64, [0xffffffff, 0xffffffff])],
    ["s=Types/Float", "Float", scalar(DataType.Float, 3.5)],
    ["s=Types/Double", "Double", scalar(DataType.Double, 0.1 + 0.2)],
    ["s=Types/DoubleNaN", "Double", scalar(DataType.Double, NaN)],
    ["s=Types/DoublePosInf", "Double", scalar(DataType.Double, Infinity)],
    ["s=Types/FloatNegInf", "Float", scalar(DataType.Float, -Infinity)],
    ["s=Types/String", "String", scalar(DataType.String, 'Grüße "quoted" ✓')],
    ["s=Types/DateTime", "DateTime", scalar(DataType.DateTime, new Date(Date.UTC(2024, 1, 29, 12, 34, 56, 789)))],
    ["g=72962B91-FA75-4AE6-8D28-B404DC7DAF63", "Guid", scalar(DataType.Guid, "12345678-9ABC-DEF0-1234-56789ABCDEF0")],
    ["b=AQID", "ByteString", scalar(DataType.ByteString, Buffer.from([0, 1, 254, 255]))],
    ["i=1001", "LocalizedText", scalar(DataType.LocalizedText, new LocalizedText({ locale: "de", text: "Hallo Welt" }))],
    ["i=1002", "StatusCode", scalar(DataType.StatusCode, StatusCodes.BadSensorFailure)],
    ["s=Types/DoubleArray", "Double", array(DataType.Double, [1.5, -2.25, 3e10])],
    ["s=Types/Int32Array", "Int32", array(DataType.Int32, [-1, 0, 2147483647])],
    ["s=Types/StringArray", "String", array(DataType.String, ["a", "b c"])],
    ["s=Types/Range", "Range", scalar(DataType.ExtensionObject, range)],
  ];
  for (const [nodeId, dataType, variant] of nodes) {
    const v = ns.addVariable({
      componentOf: folder,
      browseName: nodeId.replace("s=Types/", "").replace(/^[igb]=/, "N"),
      nodeId,
      dataType,
      valueRank: variant.arrayType === VariantArrayType.Array ? 1 : -1,
    });
    v.setValueFromSource(variant, StatusCodes.Good, TS);
  }
  const uncertain = ns.addVariable({ componentOf: folder, browseName: "Uncertain", nodeId: "s=Status/Uncertain", dataType: "Double" });
  uncertain.setValueFromSource(scalar(DataType.Double, 20.5), StatusCodes.UncertainSensorNotAccurate, TS);
  const bad = ns.addVariable({ componentOf: folder, browseName: "Bad", nodeId: "s=Status/Bad", dataType: "Double" });
  bad.setValueFromSource(scalar(DataType.Double, -1.0), StatusCodes.BadSensorFailure, TS);

  const counter = ns.addVariable({ componentOf: folder, browseName: "Counter", nodeId: "s=Counter", dataType: "UInt32" });
  const counterRead = ns.addVariable({ componentOf: folder, browseName: "CounterRead", nodeId: "s=CounterRead", dataType: "UInt32" });
  counter.setValueFromSource(scalar(DataType.UInt32, 0));
  counterRead.setValueFromSource(scalar(DataType.UInt32, 0));
  let n = 0;
  setInterval(() => {
    n += 1;
    // +1, +1, +8, ...: with an absolute deadband of 2.5 only the multiples of 10 may be reported.
    counter.setValueFromSource(scalar(DataType.UInt32, 10 * Math.floor(n / 3) + (n % 3)));
    counterRead.setValueFromSource(scalar(DataType.UInt32, n));
  }, 100);

  await server.start();
  process.stdout.write(`opc.tcp://127.0.0.1:${port}/\n`);
}

main(parseInt(process.argv[2], 10)).catch((e) => {
  console.error(e);
  process.exit(1);
});
