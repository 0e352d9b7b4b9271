//! Node ids as written in configs: `ns=2;s=Name` or, preferred, `nsu=<namespace URI>;s=Name`.
//!
//! A namespace *index* can change when a server restarts or is reconfigured; the namespace
//! *URI* cannot. So `nsu=` ids are kept unresolved here and resolved against the server's
//! NamespaceArray after every connect ([`NodeRef::resolve`]).

use std::fmt;
use std::str::FromStr;

use opcua::types::{NamespaceMap, NodeId};

use crate::core::{leaked_str, LeakedSet};

/// A node id whose namespace may still be a URI.
///
/// Kept small because a gateway holds one per mapped node (100k and more): 48 bytes, the node
/// id and one pointer to what few nodes need beyond it ([`NodeExtras`], shared by the nodes
/// of a namespace).
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRef {
    /// The node id; for `nsu=` ids its namespace index is a placeholder until resolved.
    pub node_id: NodeId,
    /// Namespace URI and text as written, when there is either (`None` for most `ns=` ids).
    extras: Option<&'static NodeExtras>,
}

// One per mapped node.
const _: () = assert!(std::mem::size_of::<NodeRef>() <= 48);

/// What a [`NodeRef`] needs beyond its node id; made once per distinct value for the
/// process's lifetime (node ids are made from the configuration, a bounded set).
#[derive(Debug, PartialEq, Eq, Hash)]
struct NodeExtras {
    /// Namespace URI for `nsu=` ids (one process-wide copy per URI); `None` for `ns=` ids.
    namespace_uri: Option<&'static str>,
    /// The text as written, when the canonical form differs (e.g. `ns=0;i=2258`).
    text: Option<Box<str>>,
}

impl NodeExtras {
    fn shared(
        namespace_uri: Option<&'static str>,
        text: Option<Box<str>>,
    ) -> Option<&'static Self> {
        static ALL: LeakedSet<NodeExtras> = LeakedSet::new();
        if namespace_uri.is_none() && text.is_none() {
            return None;
        }
        let extras = NodeExtras {
            namespace_uri,
            text,
        };
        Some(ALL.get_or_leak(&extras, || {
            Box::new(NodeExtras {
                namespace_uri: extras.namespace_uri,
                text: extras.text.clone(),
            })
        }))
    }
}

/// Parses a node id as written in a config (`ns=`, `nsu=` or plain). The namespace URI and the
/// text as written are kept once per process ([`NodeExtras`]): only for ids from the
/// configuration or the command line, a bounded set, never for ids that arrive at run time.
impl FromStr for NodeRef {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || {
            format!("{s:?} is not a NodeId (expected ns=<index>;<i|s|g|b>=<id> or nsu=<uri>;<i|s|g|b>=<id>)")
        };
        let (namespace_uri, node_id) = if let Some(rest) = s.strip_prefix("nsu=") {
            let (uri, id) = rest.split_once(';').ok_or_else(invalid)?;
            if uri.is_empty() {
                return Err(invalid());
            }
            let node_id = NodeId::from_str(id).map_err(|_| invalid())?;
            (Some(leaked_str(uri)), node_id)
        } else {
            (None, NodeId::from_str(s).map_err(|_| invalid())?)
        };
        // Once per node at start: the text is shown as the user wrote it.
        let canonical = canonical_text(namespace_uri, &node_id);
        let text = (canonical != s).then(|| s.into());
        Ok(NodeRef {
            node_id,
            extras: NodeExtras::shared(namespace_uri, text),
        })
    }
}

impl NodeRef {
    /// Namespace URI for `nsu=` ids; `None` for `ns=` ids.
    pub fn namespace_uri(&self) -> Option<&str> {
        self.extras.and_then(|e| e.namespace_uri)
    }

    /// The concrete node id on a server with the given namespace table.
    pub fn resolve(&self, namespaces: &NamespaceMap) -> Result<NodeId, String> {
        match self.namespace_uri() {
            None => Ok(self.node_id.clone()),
            Some(uri) => {
                let index = namespaces
                    .get_index(uri)
                    .ok_or_else(|| format!("the server has no namespace {uri:?}"))?;
                Ok(NodeId::new(index, self.node_id.identifier.clone()))
            }
        }
    }
}

/// The text [`fmt::Display`] shows for a node id without a stored text.
fn canonical_text(namespace_uri: Option<&str>, node_id: &NodeId) -> String {
    match namespace_uri {
        Some(uri) => format!("nsu={uri};{}", node_id.identifier),
        None => node_id.to_string(),
    }
}

impl fmt::Display for NodeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.extras {
            Some(NodeExtras {
                text: Some(text), ..
            }) => f.write_str(text),
            Some(NodeExtras {
                namespace_uri: Some(uri),
                ..
            }) => write!(f, "nsu={uri};{}", self.node_id.identifier),
            _ => write!(f, "{}", self.node_id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_forms() {
        for s in [
            "ns=2;s=CNC1.SpindleSpeed",
            "ns=0;i=2258",
            "i=2258",
            "ns=3;g=72962B91-FA75-4AE6-8D28-B404DC7DAF63",
            "ns=4;b=AQID",
            "nsu=urn:opcua-sim:cnc;s=CNC1.SpindleSpeed",
            "nsu=http://opcfoundation.org/UA/;i=2258",
            "nsu=urn:x;g=72962b91-fa75-4ae6-8d28-b404dc7daf63",
            "nsu=urn:x;ns=3;s=odd",
        ] {
            let r: NodeRef = s.parse().unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(r.to_string(), s);
        }
    }

    #[test]
    fn nodes_of_one_namespace_share_its_uri() {
        let a: NodeRef = "nsu=urn:a;s=X".parse().unwrap();
        let b: NodeRef = "nsu=urn:a;i=7".parse().unwrap();
        let (ua, ub) = (a.namespace_uri().unwrap(), b.namespace_uri().unwrap());
        assert!(std::ptr::eq(ua, ub));
        assert!(
            std::ptr::eq(a.extras.unwrap(), b.extras.unwrap()),
            "canonical text is not stored"
        );
        let plain: NodeRef = "ns=2;s=X".parse().unwrap();
        assert!(plain.extras.is_none());
    }

    #[test]
    fn rejects_garbage_with_a_message() {
        for s in ["ns=2;x=1", "nsu=;s=a", "nsu=urn:x", "hello", ""] {
            let err = s.parse::<NodeRef>().unwrap_err();
            assert!(err.contains("is not a NodeId"), "{err}");
        }
    }

    #[test]
    fn resolves_namespace_uris() {
        let mut ns = NamespaceMap::new();
        ns.add_namespace("urn:a");
        let idx = ns.add_namespace("urn:b");
        let r: NodeRef = "nsu=urn:b;s=X".parse().unwrap();
        assert_eq!(r.resolve(&ns).unwrap(), NodeId::new(idx, "X"));
        let missing: NodeRef = "nsu=urn:zzz;s=X".parse().unwrap();
        assert!(missing.resolve(&ns).unwrap_err().contains("urn:zzz"));
    }
}
