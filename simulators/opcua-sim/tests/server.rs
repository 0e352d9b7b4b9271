//! Integration tests: a real async-opcua client against the simulator on 127.0.0.1.

use std::{sync::Arc, time::Duration};

use opcua::{
    client::{ClientBuilder, DataChangeCallback, IdentityToken, Session},
    crypto::SecurityPolicy,
    types::{
        AttributeId, DataTypeId, DataValue, MessageSecurityMode, MonitoredItemCreateRequest,
        NodeId, ReadValueId, StatusCode, TimestampsToReturn, UAString, Variant,
        VariantScalarTypeId, WriteValue,
    },
};
use opcua_sim::{SimOptions, Simulator};
use tokio::task::JoinHandle;

const TIMEOUT: Duration = Duration::from_secs(30);

fn opts(pki: &std::path::Path) -> SimOptions {
    SimOptions {
        port: 0,
        tick_ms: 100,
        seed: 7,
        pki_dir: pki.join("server"),
        ..Default::default()
    }
}

struct Conn {
    session: Arc<Session>,
    event_loop: JoinHandle<StatusCode>,
}

impl Conn {
    async fn close(self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), self.session.disconnect()).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.event_loop).await;
    }
}

/// Connect and wait until the session is active; Err(status) if the server refused.
async fn connect(
    url: &str,
    pki: &std::path::Path,
    policy: SecurityPolicy,
    mode: MessageSecurityMode,
    identity: IdentityToken,
) -> Result<Conn, String> {
    let mut client = ClientBuilder::new()
        .application_name("opcua-sim-test")
        .application_uri("urn:opcua-sim-test")
        .product_uri("urn:opcua-sim-test")
        .pki_dir(pki.join("client"))
        .create_sample_keypair(true)
        .trust_server_certs(true)
        .session_retry_limit(0)
        .max_message_size(64 * 1024 * 1024)
        .max_chunk_count(4096)
        .client()
        .map_err(|e| format!("client config: {e:?}"))?;
    let (session, event_loop) = client
        .connect_to_matching_endpoint((url, policy.to_str(), mode), identity)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut event_loop = event_loop.spawn();
    tokio::select! {
        _ = session.wait_for_connection() => Ok(Conn { session, event_loop }),
        r = &mut event_loop => Err(format!("session ended: {r:?}")),
        _ = tokio::time::sleep(TIMEOUT) => Err("timeout".to_owned()),
    }
}

async fn namespace_index(session: &Session, uri: &str) -> u16 {
    let dv = read(session, &[NodeId::new(0, 2255)], AttributeId::Value).await;
    let Some(Variant::Array(arr)) = &dv[0].value else {
        panic!("namespace array: {:?}", dv[0]);
    };
    arr.values
        .iter()
        .position(|v| matches!(v, Variant::String(s) if s.as_ref() == uri))
        .unwrap_or_else(|| panic!("namespace {uri} missing")) as u16
}

async fn read(session: &Session, ids: &[NodeId], attr: AttributeId) -> Vec<DataValue> {
    let req: Vec<ReadValueId> = ids
        .iter()
        .map(|id| ReadValueId {
            node_id: id.clone(),
            attribute_id: attr as u32,
            ..Default::default()
        })
        .collect();
    session
        .read(&req, TimestampsToReturn::Both, 0.0)
        .await
        .expect("read")
}

fn scalar_of(dt: DataTypeId) -> VariantScalarTypeId {
    use VariantScalarTypeId as V;
    match dt {
        DataTypeId::Boolean => V::Boolean,
        DataTypeId::SByte => V::SByte,
        DataTypeId::Byte => V::Byte,
        DataTypeId::Int16 => V::Int16,
        DataTypeId::UInt16 => V::UInt16,
        DataTypeId::Int32 => V::Int32,
        DataTypeId::UInt32 => V::UInt32,
        DataTypeId::Int64 => V::Int64,
        DataTypeId::UInt64 => V::UInt64,
        DataTypeId::Float => V::Float,
        DataTypeId::Double => V::Double,
        DataTypeId::String => V::String,
        DataTypeId::DateTime => V::DateTime,
        DataTypeId::Guid => V::Guid,
        DataTypeId::ByteString => V::ByteString,
        DataTypeId::LocalizedText => V::LocalizedText,
        other => panic!("unexpected {other:?}"),
    }
}

fn scalar_type(v: &Variant) -> Option<VariantScalarTypeId> {
    v.scalar_type_id()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_types_cnc_subscribe_and_write() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Simulator::start(opts(dir.path())).await.unwrap();
    assert!(sim.endpoint_url().starts_with("opc.tcp://127.0.0.1:"));
    assert_eq!(
        sim.endpoint_url(),
        format!("opc.tcp://127.0.0.1:{}/", sim.port())
    );
    let mut changes = sim.subscribe_changes();

    let conn = connect(
        &sim.endpoint_url(),
        dir.path(),
        SecurityPolicy::None,
        MessageSecurityMode::None,
        IdentityToken::Anonymous,
    )
    .await
    .unwrap();
    let s = &conn.session;

    // --- Types.*
    let tns = namespace_index(s, "urn:opcua-sim:types").await;
    let types: Vec<(&str, DataTypeId, bool)> = vec![
        ("Boolean", DataTypeId::Boolean, false),
        ("SByte", DataTypeId::SByte, false),
        ("Byte", DataTypeId::Byte, false),
        ("Int16", DataTypeId::Int16, false),
        ("UInt16", DataTypeId::UInt16, false),
        ("Int32", DataTypeId::Int32, false),
        ("UInt32", DataTypeId::UInt32, false),
        ("Int64", DataTypeId::Int64, false),
        ("UInt64", DataTypeId::UInt64, false),
        ("Float", DataTypeId::Float, false),
        ("Double", DataTypeId::Double, false),
        ("String", DataTypeId::String, false),
        ("DateTime", DataTypeId::DateTime, false),
        ("Guid", DataTypeId::Guid, false),
        ("ByteString", DataTypeId::ByteString, false),
        ("LocalizedText", DataTypeId::LocalizedText, false),
        ("DoubleArray", DataTypeId::Double, true),
        ("Int32Array", DataTypeId::Int32, true),
        ("UncertainDouble", DataTypeId::Double, false),
        ("BadDouble", DataTypeId::Double, false),
    ];
    check_vars(s, tns, "Types", &types).await;
    let ids = [
        NodeId::new(tns, "Types.UncertainDouble"),
        NodeId::new(tns, "Types.BadDouble"),
        NodeId::new(tns, "Types.Double"),
    ];
    let v = read(s, &ids, AttributeId::Value).await;
    assert!(v[0].status().is_uncertain(), "{:?}", v[0]);
    assert_eq!(v[1].status(), StatusCode::BadSensorFailure);
    assert!(v[2].status().is_good());

    // --- CNC1.*
    let cns = namespace_index(s, "urn:opcua-sim:cnc").await;
    let cnc: Vec<(&str, DataTypeId, bool)> = vec![
        ("SpindleSpeed", DataTypeId::Double, false),
        ("SpindleLoad", DataTypeId::Double, false),
        ("FeedRate", DataTypeId::Double, false),
        ("AxisPositions", DataTypeId::Double, true),
        ("ProgramName", DataTypeId::String, false),
        ("PartCount", DataTypeId::UInt32, false),
        ("ExecutionState", DataTypeId::String, false),
        ("AlarmCode", DataTypeId::Int32, false),
        ("Running", DataTypeId::Boolean, false),
        ("LastCycleEnd", DataTypeId::DateTime, false),
        ("SpindleSpeedSetpoint", DataTypeId::Double, false),
        (
            "Identification.Manufacturer",
            DataTypeId::LocalizedText,
            false,
        ),
        ("Identification.Model", DataTypeId::LocalizedText, false),
        ("Identification.SerialNumber", DataTypeId::String, false),
        (
            "Identification.YearOfConstruction",
            DataTypeId::UInt16,
            false,
        ),
        ("Identification.SoftwareRevision", DataTypeId::String, false),
        ("Identification.HardwareRevision", DataTypeId::String, false),
    ];
    check_vars(s, cns, "CNC1", &cnc).await;
    let v = read(
        s,
        &[NodeId::new(cns, "CNC1.ExecutionState")],
        AttributeId::Value,
    )
    .await;
    let Some(Variant::String(state)) = &v[0].value else {
        panic!()
    };
    assert!(["IDLE", "RUNNING", "ALARM"].contains(&state.as_ref()));
    let v = read(
        s,
        &[NodeId::new(cns, "CNC1.AxisPositions")],
        AttributeId::Value,
    )
    .await;
    let Some(Variant::Array(a)) = &v[0].value else {
        panic!()
    };
    assert_eq!(a.values.len(), 3);

    // The other machines exist too.
    for (uri, id) in [
        ("urn:opcua-sim:imm", "IMM1.BarrelZoneTemperatures"),
        ("urn:opcua-sim:imm", "IMM1.ShotCount"),
        ("urn:opcua-sim:conveyor", "Conveyor1.GoodCount"),
        ("urn:opcua-sim:energy", "Meter1.Voltage"),
        ("urn:opcua-sim:energy", "Meter1.Identification.Model"),
    ] {
        let ns = namespace_index(s, uri).await;
        let v = read(s, &[NodeId::new(ns, id)], AttributeId::Value).await;
        assert!(
            v[0].status().is_good() && v[0].value.is_some(),
            "{id}: {:?}",
            v[0]
        );
    }

    // --- the broadcast channel sees the sim's writes, with whole-ms timestamps
    let mut seen = std::collections::HashSet::new();
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !(seen.contains("nsu=urn:opcua-sim:types;s=Types.Int32")
        && seen.contains("nsu=urn:opcua-sim:energy;s=Meter1.ActivePower"))
    {
        let c = tokio::time::timeout_at(deadline, changes.recv())
            .await
            .expect("no change in time")
            .expect("channel");
        assert_eq!(c.source_timestamp.ticks() % 10_000, 0, "{c:?}");
        seen.insert(c.node_id);
    }

    // --- an OPC UA subscription at 50 ms delivers data changes
    let (ntx, mut nrx) = tokio::sync::mpsc::unbounded_channel::<(NodeId, DataValue)>();
    let sub = s
        .create_subscription(
            Duration::from_millis(50),
            100,
            20,
            10_000,
            0,
            true,
            DataChangeCallback::new(move |dv, item| {
                let _ = ntx.send((item.item_to_monitor().node_id.clone(), dv));
            }),
        )
        .await
        .unwrap();
    let monitored = NodeId::new(tns, "Types.UInt32");
    let mut req: MonitoredItemCreateRequest = monitored.clone().into();
    req.requested_parameters.sampling_interval = 10.0;
    req.requested_parameters.queue_size = 10;
    let res = s
        .create_monitored_items(sub, TimestampsToReturn::Both, vec![req])
        .await
        .unwrap();
    assert!(res[0].result.status_code.is_good(), "{:?}", res[0].result);
    let mut values = Vec::new();
    while values.len() < 4 {
        let (id, dv) = tokio::time::timeout(TIMEOUT, nrx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(id, monitored);
        values.push(dv.value.clone());
    }
    let distinct: std::collections::HashSet<String> =
        values.iter().map(|v| format!("{v:?}")).collect();
    assert!(distinct.len() >= 3, "values did not change: {values:?}");

    // --- writable setpoint: accepted, echoed as a change, the speed follows it
    let sp = NodeId::new(cns, "CNC1.SpindleSpeedSetpoint");
    let w = |v: Variant| WriteValue {
        node_id: sp.clone(),
        attribute_id: AttributeId::Value as u32,
        value: DataValue::new_now(v),
        ..Default::default()
    };
    let r = s.write(&[w(Variant::Double(8500.0))]).await.unwrap();
    assert_eq!(r[0], StatusCode::Good);
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let c = tokio::time::timeout_at(deadline, changes.recv())
            .await
            .unwrap()
            .unwrap();
        if c.node_id == "nsu=urn:opcua-sim:cnc;s=CNC1.SpindleSpeedSetpoint" {
            assert_eq!(c.value, Variant::Double(8500.0));
            break;
        }
    }
    let v = read(s, std::slice::from_ref(&sp), AttributeId::Value).await;
    assert_eq!(v[0].value, Some(Variant::Double(8500.0)));
    let r = s.write(&[w(Variant::Double(99_999.0))]).await.unwrap();
    assert!(r[0].is_bad(), "out of range accepted: {r:?}");
    let r = s
        .write(&[w(Variant::String(UAString::from("fast")))])
        .await
        .unwrap();
    assert!(r[0].is_bad(), "string accepted: {r:?}");
    // Read-only variables stay read-only.
    let r = s
        .write(&[WriteValue {
            node_id: NodeId::new(cns, "CNC1.SpindleSpeed"),
            attribute_id: AttributeId::Value as u32,
            value: DataValue::new_now(Variant::Double(1.0)),
            ..Default::default()
        }])
        .await
        .unwrap();
    assert!(r[0].is_bad());

    conn.close().await;
    sim.stop().await;
}

async fn check_vars(s: &Session, ns: u16, obj: &str, vars: &[(&str, DataTypeId, bool)]) {
    let ids: Vec<NodeId> = vars
        .iter()
        .map(|(n, _, _)| NodeId::new(ns, format!("{obj}.{n}")))
        .collect();
    let values = read(s, &ids, AttributeId::Value).await;
    let dtypes = read(s, &ids, AttributeId::DataType).await;
    let ranks = read(s, &ids, AttributeId::ValueRank).await;
    for (i, (name, dt, is_array)) in vars.iter().enumerate() {
        let v = values[i]
            .value
            .as_ref()
            .unwrap_or_else(|| panic!("{name}: no value {:?}", values[i]));
        let expected: NodeId = (*dt).into();
        assert_eq!(
            dtypes[i].value,
            Some(Variant::NodeId(Box::new(expected.clone()))),
            "{obj}.{name} DataType attribute"
        );
        let scalar = match v {
            Variant::Array(a) => {
                assert!(*is_array, "{name} is an array");
                assert!(!a.values.is_empty());
                a.value_type
            }
            other => {
                assert!(!*is_array, "{name} should be an array");
                scalar_type(other).unwrap()
            }
        };
        let expected_scalar = scalar_of(*dt);
        assert_eq!(scalar, expected_scalar, "{obj}.{name}");
        assert_eq!(
            ranks[i].value,
            Some(Variant::Int32(if *is_array { 1 } else { -1 })),
            "{obj}.{name} ValueRank"
        );
        let ts = values[i].source_timestamp.expect("source timestamp");
        assert_eq!(
            ts.ticks() % 10_000,
            0,
            "{obj}.{name} timestamp not whole ms"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_on_same_port() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Simulator::start(opts(dir.path())).await.unwrap();
    let port = sim.port();
    let url = sim.endpoint_url();
    let conn = connect(
        &url,
        dir.path(),
        SecurityPolicy::None,
        MessageSecurityMode::None,
        IdentityToken::Anonymous,
    )
    .await
    .unwrap();
    // Stop with a client still connected.
    sim.stop().await;
    let r = tokio::time::timeout(TIMEOUT, conn.event_loop).await;
    assert!(r.is_ok(), "client not disconnected by stop");

    let sim = Simulator::start(SimOptions {
        port,
        ..opts(dir.path())
    })
    .await
    .expect("restart on the same port");
    assert_eq!(sim.port(), port);
    assert_eq!(sim.endpoint_url(), url);
    let conn = connect(
        &url,
        dir.path(),
        SecurityPolicy::None,
        MessageSecurityMode::None,
        IdentityToken::Anonymous,
    )
    .await
    .unwrap();
    let ns = namespace_index(&conn.session, "urn:opcua-sim:cnc").await;
    let v = read(
        &conn.session,
        &[NodeId::new(ns, "CNC1.PartCount")],
        AttributeId::Value,
    )
    .await;
    assert!(matches!(v[0].value, Some(Variant::UInt32(_))));
    conn.close().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_password() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Simulator::start(SimOptions {
        users: vec![("operator".into(), "s3cret".into())],
        allow_anonymous: false,
        ..opts(dir.path())
    })
    .await
    .unwrap();
    let url = sim.endpoint_url();
    let user = |p: &str| IdentityToken::UserName("operator".into(), p.into());

    for (policy, mode) in [
        (SecurityPolicy::None, MessageSecurityMode::None),
        (
            SecurityPolicy::Basic256Sha256,
            MessageSecurityMode::SignAndEncrypt,
        ),
        (
            SecurityPolicy::Aes256Sha256RsaPss,
            MessageSecurityMode::SignAndEncrypt,
        ),
    ] {
        let conn = connect(&url, dir.path(), policy, mode, user("s3cret"))
            .await
            .unwrap_or_else(|e| panic!("{policy:?}/{mode:?}: right password refused: {e}"));
        let ns = namespace_index(&conn.session, "urn:opcua-sim:cnc").await;
        let v = read(
            &conn.session,
            &[NodeId::new(ns, "CNC1.Running")],
            AttributeId::Value,
        )
        .await;
        assert!(matches!(v[0].value, Some(Variant::Boolean(_))));
        conn.close().await;
    }

    let r = connect(
        &url,
        dir.path(),
        SecurityPolicy::None,
        MessageSecurityMode::None,
        user("wrong"),
    )
    .await;
    assert!(r.is_err(), "wrong password accepted");
    let r = connect(
        &url,
        dir.path(),
        SecurityPolicy::Basic256Sha256,
        MessageSecurityMode::Sign,
        IdentityToken::UserName("intruder".into(), "s3cret".into()),
    )
    .await;
    assert!(r.is_err(), "unknown user accepted");
    let r = connect(
        &url,
        dir.path(),
        SecurityPolicy::None,
        MessageSecurityMode::None,
        IdentityToken::Anonymous,
    )
    .await;
    assert!(r.is_err(), "anonymous accepted although disabled");
    sim.stop().await;
}

/// Simulators starting at the same moment on one empty PKI directory (as parallel tests and
/// `opcua-sim` beside a test once did) must end with one key pair that all of them serve: before
/// the key-creation lock, one of them often served the other's certificate beside its own key
/// and every secure connection to it failed with BadCertificateInvalid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulators_started_together_on_an_empty_pki_dir_all_accept_secure_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let starts = (0..4).map(|_| Simulator::start(opts(dir.path())));
    let sims: Vec<Simulator> = futures_join_all(starts).await;
    for (i, sim) in sims.iter().enumerate() {
        let conn = connect(
            &sim.endpoint_url(),
            &dir.path().join(format!("client-{i}")),
            SecurityPolicy::Basic256Sha256,
            MessageSecurityMode::SignAndEncrypt,
            IdentityToken::Anonymous,
        )
        .await
        .unwrap_or_else(|e| panic!("simulator {i} refused a secure session: {e}"));
        conn.close().await;
    }
    for sim in sims {
        sim.stop().await;
    }
}

/// Starts every simulator concurrently (each on its own task, so the key creation overlaps).
async fn futures_join_all(
    starts: impl Iterator<
        Item = impl std::future::Future<Output = anyhow::Result<Simulator>> + Send + 'static,
    >,
) -> Vec<Simulator> {
    let handles: Vec<_> = starts.map(tokio::spawn).collect();
    let mut sims = Vec::new();
    for h in handles {
        sims.push(h.await.unwrap().expect("start simulator"));
    }
    sims
}
