//! The MQTT topic scheme, part of the product's interface (users subscribe to these):
//! `<prefix>/<shell idShort>/<submodel idShort>/<idShortPath with / for .>` per element, and
//! `<prefix>/<shell idShort>/<submodel idShort>` per submodel (`message_per = "submodel"`).

/// The MQTT topic of an element: `<prefix>/<shell idShort>/<submodel idShort>/<path with / for .>`.
///
/// Built per value for `message_per = "value"` (targets keep no topic), so in one allocation.
pub fn element_topic(prefix: &str, shell: &str, submodel: &str, path: &str) -> String {
    let mut topic =
        String::with_capacity(prefix.len() + shell.len() + submodel.len() + path.len() + 3);
    if !prefix.is_empty() {
        topic.push_str(prefix);
        topic.push('/');
    }
    topic.push_str(shell);
    topic.push('/');
    topic.push_str(submodel);
    topic.push('/');
    topic.extend(path.chars().map(|c| if c == '.' { '/' } else { c }));
    topic
}

/// MQTT topic of a submodel's batched values (`mqtt.message_per = "submodel"`).
pub fn submodel_topic(prefix: &str, shell: &str, submodel: &str) -> String {
    if prefix.is_empty() {
        format!("{shell}/{submodel}")
    } else {
        format!("{prefix}/{shell}/{submodel}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_use_slashes_for_path_dots() {
        assert_eq!(
            element_topic("aas", "CNC1", "OperationalData", "Axes.X"),
            "aas/CNC1/OperationalData/Axes/X"
        );
        assert_eq!(element_topic("", "M", "S", "P"), "M/S/P");
    }
}
