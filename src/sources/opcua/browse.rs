//! `aas-gateway browse`: walks a server's address space and prints a mapping skeleton.
//!
//! The walk is depth-limited and streams: each batch of nodes is browsed (Browse, then
//! BrowseNext while the server returns continuation points), the data types of the variables
//! found are read in one Read per batch, and their `[[mapping]]` blocks are written at once.
//! Memory grows only with the set of visited node ids (needed to not loop on the many
//! non-tree references of real address spaces) and is capped by `--max-nodes`.
//!
//! With AAS templates (`--aas-template`), a variable is filled in (submodel + path) when its
//! browse name equals the idShort of a value element (Property, SubmodelElementList,
//! MultiLanguageProperty) and the browse path names the shell that holds that element's
//! submodel (`Factory/CNC1/SpindleSpeed` → shell `CNC1`), or, when no template shell is named
//! on the path, when exactly one element has that idShort. Each element is used once. The
//! others are written commented out, so the output passes `aas-gateway validate` as it is.
//! Without templates every block says `submodel = "TODO"`.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use opcua::client::Session;
use opcua::types::{
    AttributeId, BrowseDescription, BrowseDirection, BrowseResult, BrowseResultMask, ByteString,
    DataTypeId, NamespaceMap, NodeClass, NodeClassMask, NodeId, ObjectId, ReadValueId,
    ReferenceDescription, ReferenceTypeId, TimestampsToReturn, Variant,
};
use tokio_util::sync::CancellationToken;

use super::config::OpcUaSourceConfig;
use super::limits;
use super::node_ref::NodeRef;
use super::session::{self, SessionEvent};
use crate::core::Backoff;

/// What to browse and how to connect.
#[derive(Debug, Clone)]
pub struct BrowseOptions {
    /// Endpoint URL.
    pub endpoint: String,
    /// Security policy name (as in the config).
    pub security_policy: String,
    /// Security mode name (as in the config).
    pub security_mode: String,
    /// User name (user/password token); anonymous when `None`.
    pub user: Option<String>,
    /// Password of `user`.
    pub password: Option<String>,
    /// The gateway's PKI directory.
    pub pki_dir: PathBuf,
    /// Accept any server certificate.
    pub trust_server_certs: bool,
    /// Start node (default: the Objects folder).
    pub root: String,
    /// Levels below the root to walk.
    pub depth: usize,
    /// Stop after this many nodes.
    pub max_nodes: usize,
    /// AAS environments whose idShorts are matched against browse names.
    pub aas_templates: Vec<PathBuf>,
}

/// What the walk found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BrowseSummary {
    /// Nodes visited.
    pub nodes: usize,
    /// Variables written as mapping blocks.
    pub variables: usize,
    /// Of those, filled in from the AAS templates.
    pub matched: usize,
    /// Whether `max_nodes` cut the walk short.
    pub truncated: bool,
}

/// A value element of the templates that a variable can be mapped to.
#[derive(Debug, Clone)]
struct Target {
    submodel: String,
    path: String,
    /// idShort of the shell that references the submodel.
    shell: Option<String>,
}

/// Template elements and which of them are taken.
struct Matcher {
    targets: HashMap<String, Vec<Target>>,
    shells: HashSet<String>,
    used: HashSet<(String, String)>,
}

/// idShort → the value elements carrying it.
fn template_targets(files: &[PathBuf]) -> anyhow::Result<HashMap<String, Vec<Target>>> {
    fn walk(
        elements: &serde_json::Value,
        prefix: &str,
        submodel: &str,
        out: &mut HashMap<String, Vec<Target>>,
    ) {
        for e in elements.as_array().into_iter().flatten() {
            let Some(id_short) = e.get("idShort").and_then(|v| v.as_str()) else {
                continue;
            };
            let path = if prefix.is_empty() {
                id_short.to_string()
            } else {
                format!("{prefix}.{id_short}")
            };
            match e.get("modelType").and_then(|v| v.as_str()) {
                Some("Property" | "MultiLanguageProperty") => {
                    out.entry(id_short.to_string()).or_default().push(Target {
                        submodel: submodel.to_string(),
                        path,
                        shell: None,
                    })
                }
                Some("SubmodelElementList")
                    if e.get("typeValueListElement").and_then(|v| v.as_str())
                        == Some("Property") =>
                {
                    out.entry(id_short.to_string()).or_default().push(Target {
                        submodel: submodel.to_string(),
                        path,
                        shell: None,
                    })
                }
                Some("SubmodelElementCollection" | "Entity") => {
                    let children = e.get("value").or_else(|| e.get("statements"));
                    if let Some(children) = children {
                        walk(children, &path, submodel, out);
                    }
                }
                _ => {}
            }
        }
    }
    let mut out: HashMap<String, Vec<Target>> = HashMap::new();
    for f in files {
        let text = std::fs::read_to_string(f)
            .map_err(|e| anyhow::anyhow!("--aas-template {}: {e}", f.display()))?;
        let doc: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("--aas-template {}: not JSON: {e}", f.display()))?;
        let mut shells: HashMap<String, String> = HashMap::new();
        for shell in doc["assetAdministrationShells"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let Some(name) = shell.get("idShort").and_then(|v| v.as_str()) else {
                continue;
            };
            for r in shell["submodels"].as_array().into_iter().flatten() {
                if let Some(sm) = r["keys"][0]["value"].as_str() {
                    shells.insert(sm.to_string(), name.to_string());
                }
            }
        }
        for sm in doc["submodels"].as_array().into_iter().flatten() {
            let Some(id) = sm.get("id").and_then(|v| v.as_str()) else {
                continue;
            };
            let mut found = HashMap::new();
            walk(&sm["submodelElements"], "", id, &mut found);
            for (k, targets) in found {
                out.entry(k)
                    .or_default()
                    .extend(targets.into_iter().map(|t| Target {
                        shell: shells.get(id).cloned(),
                        ..t
                    }));
            }
        }
    }
    Ok(out)
}

/// The `nsu=` form of a node id (namespace 0 stays `i=...`): survives index changes.
pub fn nsu_form(id: &NodeId, namespaces: &[String]) -> String {
    match (id.namespace, namespaces.get(id.namespace as usize)) {
        (0, _) => id.identifier.to_string(),
        (_, Some(uri)) => format!("nsu={uri};{}", id.identifier),
        (_, None) => id.to_string(),
    }
}

/// A valid idShort suggested from a browse name: `^[a-zA-Z][a-zA-Z0-9_-]*[a-zA-Z0-9_]+$`.
pub fn suggest_id_short(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if !s.starts_with(|c: char| c.is_ascii_alphabetic()) {
        s.insert(0, 'N');
    }
    while s.ends_with('-') {
        s.pop();
    }
    if s.len() < 2 {
        s.push('_');
    }
    s
}

/// The built-in type name and the natural xs type of a data type node.
pub(crate) fn type_names(data_type: &NodeId) -> (String, &'static str) {
    let builtin = (data_type.namespace == 0)
        .then(|| data_type.as_u32())
        .flatten()
        .and_then(|n| DataTypeId::try_from(n).ok());
    let Some(t) = builtin else {
        return (data_type.to_string(), "xs:string");
    };
    let xs = match t {
        DataTypeId::Boolean => "xs:boolean",
        DataTypeId::SByte => "xs:byte",
        DataTypeId::Byte => "xs:unsignedByte",
        DataTypeId::Int16 => "xs:short",
        DataTypeId::UInt16 => "xs:unsignedShort",
        DataTypeId::Int32 | DataTypeId::Enumeration => "xs:int",
        DataTypeId::UInt32 | DataTypeId::StatusCode => "xs:unsignedInt",
        DataTypeId::Int64 => "xs:long",
        DataTypeId::UInt64 => "xs:unsignedLong",
        DataTypeId::Float => "xs:float",
        DataTypeId::Double | DataTypeId::Duration => "xs:double",
        DataTypeId::DateTime | DataTypeId::UtcTime => "xs:dateTime",
        DataTypeId::ByteString => "xs:base64Binary",
        _ => "xs:string",
    };
    (format!("{t:?}"), xs)
}

fn quote(s: &str) -> String {
    // A JSON string is a valid TOML basic string (same escapes, \uXXXX included).
    serde_json::to_string(s).expect("strings serialise")
}

/// One node waiting to be browsed.
struct Pending {
    id: NodeId,
    depth: usize,
    path: String,
}

/// The `[[opcua]]` keys that `browse` prints for the connection it used (PKI folder, trust,
/// user), shared by the mapping output and `--aas`'s TOML.
pub(crate) fn write_connection_settings(
    opts: &BrowseOptions,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let pki = std::fs::canonicalize(&opts.pki_dir).unwrap_or_else(|_| opts.pki_dir.clone());
    writeln!(out, "pki_dir = {}", quote(&pki.to_string_lossy()))?;
    if opts.trust_server_certs {
        writeln!(out, "trust_server_certs = true  # commissioning only: trust the certificate with `aas-gateway pki trust` instead")?;
    }
    if let Some(user) = &opts.user {
        writeln!(
            out,
            "username = {}\n# password: set AAS_GATEWAY__OPCUA__0__PASSWORD rather than writing it here",
            quote(user)
        )?;
    }
    Ok(())
}

/// Connects, walks and writes the skeleton to `out`.
pub async fn run(opts: &BrowseOptions, out: &mut dyn Write) -> anyhow::Result<BrowseSummary> {
    let targets = template_targets(&opts.aas_templates)?;
    let root: NodeRef = opts
        .root
        .parse()
        .map_err(|e| anyhow::anyhow!("--root: {e}"))?;
    let conn = connect(opts).await?;
    let session = conn.session.clone();
    let result = walk(&session, opts, &root, &targets, out).await;
    conn.close().await;
    result
}

/// A session to `opts.endpoint`, given up after 30 s (browsing is interactive: an unreachable
/// server is reported instead of retried forever like a running gateway does).
pub(crate) async fn connect(opts: &BrowseOptions) -> anyhow::Result<session::Connection> {
    let cfg: OpcUaSourceConfig = serde_json::from_value(serde_json::json!({
        "name": "browse",
        "endpoint": opts.endpoint,
        "security_policy": opts.security_policy,
        "security_mode": opts.security_mode,
        "username": opts.user,
        "password": opts.password,
        "trust_server_certs": opts.trust_server_certs,
    }))?;
    let identity = session::identity(&cfg)?;
    let mut client = session::build_client(&cfg, &opts.pki_dir)?;
    let shutdown = CancellationToken::new();
    let mut backoff = Backoff::new();
    let Some(mut conn) = session::open(
        &mut client,
        &cfg,
        &identity,
        &mut backoff,
        &shutdown,
        &|_| {},
    )
    .await?
    else {
        anyhow::bail!("cancelled");
    };
    let connected = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        loop {
            match conn.events.recv().await {
                Some(SessionEvent::Connected(_)) => return Ok(()),
                Some(SessionEvent::Lost(_)) => {}
                Some(SessionEvent::Fatal(s)) => {
                    anyhow::bail!("{}: {s} ({})", opts.endpoint, session::describe_fatal(s))
                }
                Some(SessionEvent::Ended(s)) => anyhow::bail!("{}: {s}", opts.endpoint),
                None => anyhow::bail!("{}: the session ended", opts.endpoint),
            }
        }
    })
    .await;
    match connected {
        Ok(Ok(())) => Ok(conn),
        Ok(Err(e)) => {
            conn.close().await;
            Err(e)
        }
        Err(_) => {
            conn.close().await;
            anyhow::bail!("{}: no session within 30 s", opts.endpoint);
        }
    }
}

async fn walk(
    session: &Arc<Session>,
    opts: &BrowseOptions,
    root: &NodeRef,
    targets: &HashMap<String, Vec<Target>>,
    out: &mut dyn Write,
) -> anyhow::Result<BrowseSummary> {
    let ns_map: NamespaceMap = session.read_namespace_array().await?;
    let mut namespaces = vec![String::new(); ns_map.known_namespaces().len()];
    for (uri, &i) in ns_map.known_namespaces() {
        if let Some(slot) = namespaces.get_mut(i as usize) {
            *slot = uri.clone();
        }
    }
    let limits = limits::read(session).await;
    let browse_batch = limits.browse_batch(100);
    let read_batch = limits.read_batch(1000);
    let root_id = root
        .resolve(&ns_map)
        .map_err(|e| anyhow::anyhow!("--root {root}: {e}"))?;

    writeln!(
        out,
        "# Generated by `aas-gateway browse {}` at {} (root {root}, depth {}).\n\
         # Each [[mapping]] block is one variable; check submodel and path, delete what you do not need.",
        opts.endpoint,
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        opts.depth
    )?;
    if !opts.aas_templates.is_empty() {
        writeln!(out, "\n[aas]\nenvironments = [")?;
        for t in &opts.aas_templates {
            let abs = std::fs::canonicalize(t).unwrap_or_else(|_| t.clone());
            writeln!(out, "  {},", quote(&abs.to_string_lossy()))?;
        }
        writeln!(out, "]")?;
    }
    writeln!(
        out,
        "\n[[opcua]]\nname = \"server\"\nendpoint = {}\nsecurity_policy = {}\nsecurity_mode = {}",
        quote(&opts.endpoint),
        quote(&opts.security_policy),
        quote(&opts.security_mode)
    )?;
    write_connection_settings(opts, out)?;

    let shells: HashSet<String> = targets
        .values()
        .flatten()
        .filter_map(|t| t.shell.clone())
        .collect();
    let mut matcher = Matcher {
        targets: targets.clone(),
        shells,
        used: HashSet::new(),
    };
    let mut summary = BrowseSummary::default();
    let mut visited: HashSet<NodeId> = HashSet::new();
    visited.insert(root_id.clone());
    let mut stack = vec![Pending {
        id: root_id,
        depth: 0,
        path: String::new(),
    }];
    let server_object: NodeId = ObjectId::Server.into();
    while !stack.is_empty() {
        let take = stack.len().min(browse_batch);
        let batch: Vec<Pending> = stack.split_off(stack.len() - take);
        let descriptions: Vec<BrowseDescription> = batch
            .iter()
            .map(|p| BrowseDescription {
                node_id: p.id.clone(),
                browse_direction: BrowseDirection::Forward,
                reference_type_id: ReferenceTypeId::HierarchicalReferences.into(),
                include_subtypes: true,
                node_class_mask: (NodeClassMask::OBJECT | NodeClassMask::VARIABLE).bits(),
                result_mask: BrowseResultMask::All as u32,
            })
            .collect();
        let results = session
            .browse(&descriptions, 1000, None)
            .await
            .map_err(|e| anyhow::anyhow!("Browse failed: {e}"))?;
        let mut variables: Vec<(ReferenceDescription, String)> = Vec::new();
        for (parent, result) in batch.iter().zip(results) {
            for r in all_references(session, result).await? {
                if summary.nodes >= opts.max_nodes {
                    summary.truncated = true;
                    break;
                }
                // Other servers' nodes cannot be mapped; already seen nodes are skipped
                // (address spaces are graphs, not trees).
                if r.node_id.server_index != 0 || !r.node_id.namespace_uri.is_null() {
                    continue;
                }
                let id = r.node_id.node_id.clone();
                if !visited.insert(id.clone()) {
                    continue;
                }
                summary.nodes += 1;
                let name = r.browse_name.name.as_ref().to_string();
                let path = if parent.path.is_empty() {
                    name.clone()
                } else {
                    format!("{}/{name}", parent.path)
                };
                match r.node_class {
                    NodeClass::Variable => variables.push((r, path)),
                    // The Server object holds hundreds of diagnostics variables nobody maps by
                    // accident; it is walked only when it is the root.
                    NodeClass::Object if id != server_object && parent.depth + 1 < opts.depth => {
                        stack.push(Pending {
                            id,
                            depth: parent.depth + 1,
                            path,
                        })
                    }
                    _ => {}
                }
            }
        }
        for chunk in variables.chunks((read_batch / 2).max(1)) {
            write_variables(session, chunk, &namespaces, &mut matcher, out, &mut summary).await?;
        }
        out.flush()?;
        if summary.truncated {
            writeln!(
                out,
                "\n# Stopped after {} nodes (--max-nodes); browse further with --root.",
                opts.max_nodes
            )?;
            break;
        }
    }
    Ok(summary)
}

/// The references of one Browse result, following continuation points with BrowseNext.
pub(crate) async fn all_references(
    session: &Session,
    first: BrowseResult,
) -> anyhow::Result<Vec<ReferenceDescription>> {
    let mut refs = first.references.unwrap_or_default();
    let mut cp: ByteString = first.continuation_point;
    while !cp.is_null() && !cp.is_empty() {
        let next = session
            .browse_next(false, std::slice::from_ref(&cp))
            .await
            .map_err(|e| anyhow::anyhow!("BrowseNext failed: {e}"))?;
        let Some(r) = next.into_iter().next() else {
            break;
        };
        refs.extend(r.references.unwrap_or_default());
        cp = r.continuation_point;
    }
    Ok(refs)
}

/// The element a variable at browse `path` maps to (see the module docs for the rule).
fn choose<'t>(
    candidates: &'t [Target],
    path: &str,
    shells: &HashSet<String>,
    used: &HashSet<(String, String)>,
) -> Option<&'t Target> {
    let segments: Vec<&str> = path.split('/').collect();
    let free = |t: &&Target| !used.contains(&(t.submodel.clone(), t.path.clone()));
    let strong: Vec<&Target> = candidates
        .iter()
        .filter(|t| t.shell.as_deref().is_some_and(|s| segments.contains(&s)))
        .filter(free)
        .collect();
    if strong.len() == 1 {
        return Some(strong[0]);
    }
    let names_a_shell = segments.iter().any(|s| shells.contains(*s));
    match candidates {
        [one] if !names_a_shell && free(&one) => Some(one),
        _ => None,
    }
}

async fn write_variables(
    session: &Session,
    vars: &[(ReferenceDescription, String)],
    namespaces: &[String],
    matcher: &mut Matcher,
    out: &mut dyn Write,
    summary: &mut BrowseSummary,
) -> anyhow::Result<()> {
    let Matcher {
        targets,
        shells,
        used,
    } = matcher;
    let mut reads = Vec::with_capacity(vars.len() * 2);
    for (r, _) in vars {
        for attr in [AttributeId::DataType, AttributeId::ValueRank] {
            reads.push(ReadValueId {
                node_id: r.node_id.node_id.clone(),
                attribute_id: attr as u32,
                ..Default::default()
            });
        }
    }
    let values = session
        .read(&reads, TimestampsToReturn::Neither, 0.0)
        .await
        .map_err(|e| anyhow::anyhow!("Read of data types failed: {e}"))?;
    for (i, (r, path)) in vars.iter().enumerate() {
        let data_type = match values.get(2 * i).and_then(|v| v.value.as_ref()) {
            Some(Variant::NodeId(id)) => Some((**id).clone()),
            _ => None,
        };
        let rank = match values.get(2 * i + 1).and_then(|v| v.value.as_ref()) {
            Some(Variant::Int32(r)) => *r,
            _ => -1,
        };
        let (type_name, xs) = data_type
            .as_ref()
            .map(type_names)
            .unwrap_or_else(|| ("unknown".into(), "xs:string"));
        let array = if rank >= 1 {
            "[] (SubmodelElementList)"
        } else {
            ""
        };
        let name = r.browse_name.name.as_ref();
        let node_id = nsu_form(&r.node_id.node_id, namespaces);
        let candidates = targets.get(name).map(Vec::as_slice).unwrap_or_default();
        let chosen = choose(candidates, path, shells, used).cloned();
        writeln!(
            out,
            "\n# {path}: {type_name}{array}, suggested valueType {xs}"
        )?;
        summary.variables += 1;
        match (chosen.as_ref(), targets.is_empty()) {
            (Some(t), _) => {
                summary.matched += 1;
                used.insert((t.submodel.clone(), t.path.clone()));
                writeln!(
                    out,
                    "[[mapping]]\nnode_id = {}\nsubmodel = {}\npath = {}",
                    quote(&node_id),
                    quote(&t.submodel),
                    quote(&t.path)
                )?;
            }
            (None, true) => writeln!(
                out,
                "[[mapping]]\nnode_id = {}\nsubmodel = \"TODO\"\npath = {}",
                quote(&node_id),
                quote(&suggest_id_short(name))
            )?,
            (None, false) => writeln!(
                out,
                "# no element with idShort {} in the templates{}\n# [[mapping]]\n# node_id = {}\n# submodel = \"TODO\"\n# path = {}",
                quote(name),
                if candidates.len() > 1 { " (ambiguous)" } else { "" },
                quote(&node_id),
                quote(&suggest_id_short(name))
            )?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_shorts_are_valid() {
        let re_ok = |s: &str| {
            s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && s.len() >= 2
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                && !s.ends_with('-')
        };
        for name in ["SpindleSpeed", "1st value", "a", "Temp-", "Ä/ö", "x.y"] {
            let s = suggest_id_short(name);
            assert!(re_ok(&s), "{name} -> {s}");
        }
        assert_eq!(suggest_id_short("SpindleSpeed"), "SpindleSpeed");
    }

    #[test]
    fn node_ids_use_namespace_uris() {
        let ns = vec![
            "http://opcfoundation.org/UA/".to_string(),
            "urn:x".to_string(),
        ];
        assert_eq!(nsu_form(&NodeId::new(1, "A.B"), &ns), "nsu=urn:x;s=A.B");
        assert_eq!(nsu_form(&NodeId::new(0, 2258u32), &ns), "i=2258");
        let parsed: NodeRef = nsu_form(&NodeId::new(1, 7u32), &ns).parse().unwrap();
        assert_eq!(parsed.namespace_uri(), Some("urn:x"));
    }
}
