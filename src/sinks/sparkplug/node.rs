//! The node's model: its devices (shells), their metrics with aliases, and the newest value of
//! each metric (what a birth reports as current).

use super::payload::{metric, metric_name, DataType, MetricDef, Sample};
use super::proto::Metric;
use crate::model::{ElementTarget, SubmodelUpdate};
use crate::sinks::SinkElement;
use std::collections::HashMap;

/// One device: a shell and its metrics.
#[derive(Debug)]
pub struct Device {
    /// Device id: the shell's idShort.
    pub id: String,
    /// Its metrics, in mapping order.
    pub metrics: Vec<MetricDef>,
    /// Newest value per metric (by source timestamp), `None` until one arrived.
    pub newest: Vec<Option<Sample>>,
    /// The sources its values come from.
    pub sources: Vec<usize>,
    /// A DBIRTH of it went out this session and no DDEATH since.
    pub born: bool,
}

/// Every device and metric of the node. Memory: one definition and one value per element.
#[derive(Debug, Default)]
pub struct Node {
    /// Devices in mapping order.
    pub devices: Vec<Device>,
    /// (shell idShort, metric name) → (device, metric) index.
    index: HashMap<(String, String), (usize, usize)>,
    /// Alias → (device, metric) index.
    by_alias: HashMap<u64, (usize, usize)>,
    /// Target (by address) → (device, metric): the lookup every value takes. Updates carry the
    /// very `&'static ElementTarget` the mapping made (never freed, so an address is never
    /// reused), so a hit costs no string; a target decoded from an older outbox misses and
    /// falls back to [`Node::index`].
    by_target: HashMap<usize, (usize, usize)>,
}

impl Node {
    /// The node for these elements (each element once; aliases 1, 2, ... in this order).
    pub fn new(elements: &[SinkElement]) -> Node {
        let mut node = Node::default();
        let mut alias = super::payload::REBIRTH_ALIAS;
        for e in elements {
            let t = e.target;
            let name = metric_name(t);
            let key = (t.submodel.shell_id_short.to_string(), name.clone());
            if let Some(&at) = node.index.get(&key) {
                node.by_target.insert(std::ptr::from_ref(t) as usize, at);
                continue;
            }
            let d = match node
                .devices
                .iter()
                .position(|d| *d.id == *t.submodel.shell_id_short)
            {
                Some(d) => d,
                None => {
                    node.devices.push(Device {
                        id: t.submodel.shell_id_short.to_string(),
                        metrics: Vec::new(),
                        newest: Vec::new(),
                        sources: Vec::new(),
                        born: false,
                    });
                    node.devices.len() - 1
                }
            };
            alias += 1;
            let dev = &mut node.devices[d];
            if !dev.sources.contains(&e.source) {
                dev.sources.push(e.source);
            }
            dev.metrics.push(MetricDef {
                name,
                alias,
                datatype: DataType::of(t.value_type, e.list),
                unit: t.unit().map(str::to_string),
                semantic_id: t.semantic_id().map(str::to_string),
                submodel_id: t.submodel.id.to_string(),
                path: t.id_short_path.to_string(),
            });
            dev.newest.push(None);
            node.index.insert(key, (d, dev.metrics.len() - 1));
            node.by_target
                .insert(std::ptr::from_ref(t) as usize, (d, dev.metrics.len() - 1));
            node.by_alias.insert(alias, (d, dev.metrics.len() - 1));
        }
        node
    }

    /// Where the metric of `t` is, if the node has it.
    pub fn find(&self, t: &ElementTarget) -> Option<(usize, usize)> {
        if let Some(&at) = self.by_target.get(&(t as *const ElementTarget as usize)) {
            return Some(at);
        }
        self.index
            .get(&(t.submodel.shell_id_short.to_string(), metric_name(t)))
            .copied()
    }

    /// The metric a command names on device `device` (by name, else by alias).
    pub fn find_command(&self, device: &str, m: &super::proto::Metric) -> Option<(usize, usize)> {
        let at = match &m.name {
            Some(name) => self.index.get(&(device.to_string(), name.clone())).copied(),
            None => m.alias.and_then(|a| self.by_alias.get(&a).copied()),
        }?;
        (self.devices[at.0].id == device).then_some(at)
    }

    /// Remembers `u` as the metric's newest value unless a newer one is known (a replay of
    /// older, historical values must not turn a birth's "current" value back).
    pub fn remember(&mut self, at: (usize, usize), u: &SubmodelUpdate) {
        let slot = &mut self.devices[at.0].newest[at.1];
        if slot
            .as_ref()
            .is_some_and(|s| s.ts_nanos > u.source_ts_nanos)
        {
            return;
        }
        *slot = Some(sample(u));
    }

    /// True when device `d` has a source that is not known to be lost (`up[i]`: source `i`).
    pub fn alive(&self, d: usize, up: &[bool]) -> bool {
        self.devices[d]
            .sources
            .iter()
            .any(|s| up.get(*s).copied().unwrap_or(true))
    }

    /// The DBIRTH metrics of device `d`: every metric with its newest value (null if none yet).
    pub fn birth_metrics(&self, d: usize) -> Vec<Metric> {
        let dev = &self.devices[d];
        dev.metrics
            .iter()
            .zip(&dev.newest)
            .map(|(def, v)| metric(def, v.as_ref(), true, false))
            .collect()
    }

    /// The DDATA metric of `u` at `at`.
    pub fn data_metric(&self, at: (usize, usize), u: &SubmodelUpdate, historical: bool) -> Metric {
        metric(
            &self.devices[at.0].metrics[at.1],
            Some(&sample(u)),
            false,
            historical,
        )
    }
}

fn sample(u: &SubmodelUpdate) -> Sample {
    Sample {
        value: u.value.clone(),
        status: u.status,
        ts_nanos: u.source_ts_nanos,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(path: &str) -> ElementTarget {
        ElementTarget::for_test("CNC1", "Op", path)
    }

    #[test]
    fn a_value_finds_its_metric_by_its_target_and_by_name_when_decoded_elsewhere() {
        let (a, b) = (target("A").leak(), target("B").leak());
        let element = |t: &'static ElementTarget| SinkElement {
            target: t,
            list: false,
            source: 0,
        };
        let node = Node::new(&[element(a), element(b)]);
        assert_eq!(node.find(a), Some((0, 0)));
        assert_eq!(node.find(b), Some((0, 1)));
        // A target read back from an older outbox is another allocation: found by name.
        assert_eq!(node.find(&target("B")), Some((0, 1)));
        assert_eq!(node.find(&target("C")), None);
    }
}
