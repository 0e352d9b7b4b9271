//! Message bodies and topics of the MQTT sink: per value, per submodel, BaSyx events.

use crate::core::value::TimestampText;
use crate::core::xs::write_json_str;
use crate::model::SubmodelUpdate;

/// The payload of a value message.
pub fn payload(u: &SubmodelUpdate) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_payload(u, false, &mut Timestamps::default(), &mut out);
    out
}

/// The last source and server timestamp texts a window's payloads wrote (see
/// [`TimestampText`]).
#[derive(Default)]
struct Timestamps {
    source: TimestampText,
    server: TimestampText,
}

/// Appends the JSON of `u`: the value message's payload, or (`in_submodel`) an item of a
/// submodel message, which starts with its `idShortPath` and leaves out `submodelId`.
///
/// Written field by field from the typed value into the caller's buffer: no
/// `serde_json::Value`, no `String` per timestamp (this ran for every value; the key order and
/// bytes are those the serde-derived struct produced before, see the test).
fn write_payload(u: &SubmodelUpdate, in_submodel: bool, ts: &mut Timestamps, out: &mut Vec<u8>) {
    let path = &*u.target.id_short_path;
    out.push(b'{');
    if in_submodel {
        out.extend_from_slice(b"\"idShortPath\":");
        write_json_str(path, out);
        out.push(b',');
    }
    out.extend_from_slice(b"\"value\":");
    u.target.value_type.write_json(&u.value, out);
    out.extend_from_slice(b",\"valueType\":\"");
    out.extend_from_slice(u.target.value_type.as_str().as_bytes());
    out.extend_from_slice(b"\",\"timestamp\":\"");
    ts.source.write(u.source_ts_nanos, out);
    out.push(b'"');
    if u.server_ts_nanos != 0 {
        out.extend_from_slice(b",\"serverTimestamp\":\"");
        ts.server.write(u.server_ts_nanos, out);
        out.push(b'"');
    }
    out.extend_from_slice(b",\"quality\":\"");
    out.extend_from_slice(u.quality().as_str().as_bytes());
    out.extend_from_slice(b"\",\"statusCode\":");
    serde_json::to_writer(&mut *out, &u.status).expect("writing to a Vec cannot fail");
    if !in_submodel {
        out.extend_from_slice(b",\"submodelId\":");
        write_json_str(&u.target.submodel.id, out);
        out.extend_from_slice(b",\"idShortPath\":");
        write_json_str(path, out);
    }
    out.push(b'}');
}

/// Largest submodel message body before the rest of its values go in the next one.
const SUBMODEL_MESSAGE_BYTES: usize = 256 * 1024;

/// The submodel messages of a window, `(topic, payload)`: one per submodel (more when one grows
/// past [`SUBMODEL_MESSAGE_BYTES`]), each keeping the window's order of its values.
pub fn submodel_messages<'a, I>(topic_prefix: &str, updates: I) -> Vec<(String, Vec<u8>)>
where
    I: IntoIterator<Item = &'a SubmodelUpdate>,
    I::IntoIter: Clone,
{
    let updates = updates.into_iter();
    // One shared record per submodel (`SubmodelNames::shared`): the pointers are equal
    // for the values of one submodel; the texts decide only between records.
    let same_submodel = |a: &SubmodelUpdate, b: &SubmodelUpdate| {
        let (a, b) = (a.target.submodel, b.target.submodel);
        std::ptr::eq(a, b) || (a.id == b.id && a.shell_id_short == b.shell_id_short)
    };
    // Values per submodel first, so that each message is allocated once at about its size:
    // grown by doubling, a window's 160 KB message was copied about one and a half times
    // over (and took fresh pages at every step). The targets this reads are the ones the
    // messages are written from next, then in the cache.
    let mut counts: Vec<(&'a SubmodelUpdate, usize)> = Vec::new();
    for u in crate::model::prefetch_targets(updates.clone()) {
        match counts.iter_mut().find(|(first, _)| same_submodel(first, u)) {
            Some((_, n)) => *n += 1,
            None => counts.push((u, 1)),
        }
    }
    // Open messages: the first value's target names the submodel, and the values of the
    // submodel not yet written; few per window.
    let mut open: Vec<(&'a SubmodelUpdate, Vec<u8>, usize, bool)> = Vec::new();
    let mut done = Vec::new();
    let mut timestamps = Timestamps::default();
    let finish = |first: &SubmodelUpdate, mut body: Vec<u8>| {
        body.extend_from_slice(b"]}");
        let t = &first.target;
        let topic = super::topic::submodel_topic(
            topic_prefix,
            &t.submodel.shell_id_short,
            &t.submodel.id_short,
        );
        (topic, body)
    };
    for u in crate::model::prefetch_targets_and_paths(updates) {
        let at = match open.iter().position(|(first, ..)| same_submodel(first, u)) {
            Some(at) => {
                open[at].1.push(b',');
                at
            }
            None => {
                // Left of this submodel: all of it, or what a split message left.
                let left = counts
                    .iter()
                    .find(|(first, _)| same_submodel(first, u))
                    .map_or(1, |(_, n)| *n);
                let mut body = Vec::with_capacity(1024);
                body.extend_from_slice(b"{\"submodelId\":");
                write_json_str(&u.target.submodel.id, &mut body);
                body.extend_from_slice(b",\"values\":[");
                open.push((u, body, left, false));
                open.len() - 1
            }
        };
        let (_, body, left, sized) = &mut open[at];
        let before = body.len();
        write_payload(u, true, &mut timestamps, body);
        *left = left.saturating_sub(1);
        if !*sized {
            *sized = true;
            // After the first value: room for the rest, sized from it (an eighth more for
            // longer numbers and texts; a message ends past SUBMODEL_MESSAGE_BYTES anyway).
            let each = (body.len() - before + 1) * 9 / 8;
            let want = (*left * each).min(SUBMODEL_MESSAGE_BYTES + 2 * each);
            body.reserve(want);
        }
        if body.len() >= SUBMODEL_MESSAGE_BYTES {
            let (first, body, left, _) = open.swap_remove(at);
            done.push(finish(first, body));
            if let Some((_, n)) = counts.iter_mut().find(|(f, _)| same_submodel(f, first)) {
                *n = left;
            }
        }
    }
    done.extend(
        open.into_iter()
            .map(|(first, body, ..)| finish(first, body)),
    );
    done
}

/// BaSyx-compatible event topic of an element.
pub fn basyx_topic(repo_id: &str, u: &SubmodelUpdate) -> String {
    format!(
        "sm-repository/{repo_id}/submodels/{}/submodelElements/{}/updated",
        crate::aas::encode_id(&u.target.submodel.id),
        u.target.id_short_path
    )
}

/// BaSyx-compatible event payload: the element as AAS JSON with its new value.
pub fn basyx_payload(u: &SubmodelUpdate) -> Vec<u8> {
    let t = &u.target;
    let id_short = t
        .id_short_path
        .rsplit('.')
        .next()
        .unwrap_or(&t.id_short_path);
    let value_type = t.value_type.as_str();
    let element = match &u.value {
        crate::model::TypedValue::List(items) => serde_json::json!({
            "modelType": "SubmodelElementList",
            "idShort": id_short,
            "typeValueListElement": "Property",
            "valueTypeListElement": value_type,
            "value": items.iter().map(|v| serde_json::json!({
                "modelType": "Property", "valueType": value_type, "value": t.value_type.lexical(v)
            })).collect::<Vec<_>>(),
        }),
        v => serde_json::json!({
            "modelType": "Property",
            "idShort": id_short,
            "valueType": value_type,
            "value": t.value_type.lexical(v),
        }),
    };
    serde_json::to_vec(&element).expect("element serialises")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aas::XsType;
    use crate::model::{ElementTarget, SubmodelNames, TypedValue};

    fn target(submodel: &str, path: &str) -> &'static ElementTarget {
        ElementTarget::new(
            SubmodelNames::shared(&format!("urn:sm:{submodel}"), submodel, "Cnc1"),
            path,
            XsType::Double,
            None,
            None,
        )
        .leak()
    }

    fn update(t: &'static ElementTarget, v: f64, ts: i64) -> SubmodelUpdate {
        SubmodelUpdate {
            target: t,
            value: TypedValue::Float(v),
            status: 0,
            source_ts_nanos: ts,
            server_ts_nanos: 0,
        }
    }

    /// The serde-derived payload the hand-written one replaced: the reference for its bytes.
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Reference<'a> {
        #[serde(rename = "idShortPath", skip_serializing_if = "Option::is_none")]
        id_short_path_first: Option<&'a str>,
        value: serde_json::Value,
        value_type: &'static str,
        timestamp: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        server_timestamp: Option<String>,
        quality: &'static str,
        status_code: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        submodel_id: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        id_short_path: Option<&'a str>,
    }

    fn reference(u: &SubmodelUpdate, in_submodel: bool) -> Vec<u8> {
        let path = &*u.target.id_short_path;
        serde_json::to_vec(&Reference {
            id_short_path_first: in_submodel.then_some(path),
            value: u.target.value_type.json(&u.value),
            value_type: u.target.value_type.as_str(),
            timestamp: crate::model::format_timestamp(u.source_ts_nanos),
            server_timestamp: (u.server_ts_nanos != 0)
                .then(|| crate::model::format_timestamp(u.server_ts_nanos)),
            quality: u.quality().as_str(),
            status_code: u.status,
            submodel_id: (!in_submodel).then_some(&*u.target.submodel.id),
            id_short_path: (!in_submodel).then_some(path),
        })
        .unwrap()
    }

    #[test]
    fn payload_bytes_are_those_of_the_serde_struct() {
        let mut stamps = Timestamps::default();
        for (value_type, value) in [
            (XsType::Double, TypedValue::Float(-1.25e-7)),
            (XsType::Double, TypedValue::Float(f64::NAN)),
            (XsType::Int, TypedValue::Int(-42)),
            (XsType::UnsignedLong, TypedValue::UInt(u64::MAX)),
            (XsType::Boolean, TypedValue::Bool(true)),
            (XsType::String, TypedValue::Text("line\nbreak \u{7}".into())),
            (XsType::String, TypedValue::Null),
            (
                XsType::Double,
                TypedValue::List(vec![TypedValue::Float(1.0), TypedValue::Float(2.5)]),
            ),
        ] {
            let t = ElementTarget::new(
                SubmodelNames::shared("urn:sm:Op \"quoted\" ü", "Op", "Cnc1"),
                "Axes.X\\1",
                value_type,
                None,
                None,
            )
            .leak();
            for (status, server_ts) in [
                (0, 0),
                (0x4000_0000, 1_700_000_000_000_123_456),
                (0x8000_0000, -5),
            ] {
                let u = SubmodelUpdate {
                    target: t,
                    value: value.clone(),
                    status,
                    source_ts_nanos: 1_700_000_000_123_000_000,
                    server_ts_nanos: server_ts,
                };
                for in_submodel in [false, true] {
                    let mut ours = Vec::new();
                    // One cache through every case: a stale text would differ from serde's.
                    write_payload(&u, in_submodel, &mut stamps, &mut ours);
                    assert_eq!(
                        String::from_utf8(ours).unwrap(),
                        String::from_utf8(reference(&u, in_submodel)).unwrap()
                    );
                }
            }
        }
    }

    #[test]
    fn value_payload_names_its_submodel_and_element() {
        let p = payload(&update(
            target("Op", "Speed"),
            1.5,
            1_700_000_000_000_000_000,
        ));
        let v: serde_json::Value = serde_json::from_slice(&p).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"value": 1.5, "valueType": "xs:double",
                "timestamp": "2023-11-14T22:13:20Z", "quality": "good", "statusCode": 0,
                "submodelId": "urn:sm:Op", "idShortPath": "Speed"})
        );
    }

    #[test]
    fn submodel_messages_group_by_submodel_and_keep_order() {
        let (speed, temp, energy) = (
            target("Op", "Speed"),
            target("Op", "Axes.Temp"),
            target("Energy", "Power"),
        );
        let window = [
            update(speed, 1.0, 1),
            update(energy, 10.0, 1),
            update(temp, 2.0, 1),
            update(speed, 3.0, 2),
        ];
        let msgs = submodel_messages("aas", &window);
        let topics: Vec<_> = msgs.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(topics, ["aas/Cnc1/Op", "aas/Cnc1/Energy"]);
        let op: serde_json::Value = serde_json::from_slice(&msgs[0].1).unwrap();
        assert_eq!(op["submodelId"], "urn:sm:Op");
        let items = op["values"].as_array().unwrap();
        let seen: Vec<_> = items
            .iter()
            .map(|i| {
                (
                    i["idShortPath"].as_str().unwrap(),
                    i["value"].as_f64().unwrap(),
                )
            })
            .collect();
        assert_eq!(seen, [("Speed", 1.0), ("Axes.Temp", 2.0), ("Speed", 3.0)]);
        // An item is the value payload without the submodel id.
        assert!(items[0].get("submodelId").is_none());
        assert_eq!(items[0]["valueType"], "xs:double");
        let energy: serde_json::Value = serde_json::from_slice(&msgs[1].1).unwrap();
        assert_eq!(energy["values"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn a_large_submodel_window_is_split_into_several_messages() {
        let t = target("Op", "Speed");
        let window: Vec<_> = (0..5000).map(|i| update(t, i as f64, i)).collect();
        let msgs = submodel_messages("aas", &window);
        assert!(msgs.len() > 1, "5000 values exceed one message");
        let mut values = Vec::new();
        for (topic, body) in &msgs {
            assert_eq!(topic, "aas/Cnc1/Op");
            assert!(body.len() <= SUBMODEL_MESSAGE_BYTES + 1024);
            let doc: serde_json::Value = serde_json::from_slice(body).unwrap();
            values.extend(
                doc["values"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| i["value"].as_f64().unwrap()),
            );
        }
        assert_eq!(values, (0..5000).map(|i| i as f64).collect::<Vec<_>>());
    }

    /// Each message is allocated at about its size from the start (not grown by doubling,
    /// which left a 160 KB message in 256 KB and copied it on the way), also the second
    /// message of a split submodel and submodels that take turns in a window.
    #[test]
    fn messages_are_allocated_at_their_size() {
        let (speed, power) = (target("Op", "Speed"), target("Energy", "Power"));
        let one: Vec<_> = (0..1000)
            .map(|i| update(speed, i as f64 * 0.37, i))
            .collect();
        let mixed: Vec<_> = (0..1000)
            .map(|i| update(if i % 3 == 0 { power } else { speed }, i as f64, i))
            .collect();
        let long: Vec<_> = (0..5000).map(|i| update(speed, i as f64, i)).collect();
        for window in [&one, &mixed, &long] {
            let msgs = submodel_messages("aas", window.iter());
            for (topic, body) in &msgs {
                assert!(
                    body.capacity() <= body.len() + body.len() / 4 + 1024,
                    "{topic}: {} bytes in {}",
                    body.len(),
                    body.capacity()
                );
            }
        }
    }
}
