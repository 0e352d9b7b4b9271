// Independent AID reader for tests/onboard.rs: converts every AID submodel of an AAS
// environment (file given as the argument) into a WoT Thing Description with Eclipse
// Thingweb's @thingweb/aas-aid and prints, per submodel id, the TD's base, security and
// properties (type, observable, form hrefs) as JSON on stdout.
const fs = require("fs");
const { AssetInterfacesDescription } = require("@thingweb/aas-aid");

const util = new AssetInterfacesDescription();
const env = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const out = {};
for (const sm of env.submodels || []) {
  if (sm.idShort !== "AssetInterfacesDescription") continue;
  const td = JSON.parse(util.transformAID2TD(JSON.stringify(sm), JSON.stringify({ title: sm.id })));
  const properties = {};
  for (const [name, p] of Object.entries(td.properties || {})) {
    properties[name] = { type: p.type, observable: p.observable, hrefs: (p.forms || []).map((f) => f.href) };
  }
  out[sm.id] = { base: td.base, security: td.security, properties };
}
console.log(JSON.stringify(out));
