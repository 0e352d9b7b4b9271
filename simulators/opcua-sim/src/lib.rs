//! Bundled OPC UA factory simulator for the AAS edge gateway.
//!
//! A CNC machining centre, an injection moulding machine, a conveyor, an energy meter, a
//! type-coverage object and an optional bulk "scale" object, served by an async-opcua server.
//! Behaviour is deterministic for a given seed (values are a function of seed and tick number;
//! timestamps are wall-clock, truncated to whole milliseconds).
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let sim = opcua_sim::Simulator::start(opcua_sim::SimOptions { port: 0, ..Default::default() }).await?;
//! println!("{}", sim.endpoint_url());
//! let mut changes = sim.subscribe_changes();
//! let first = changes.recv().await?;
//! println!("{} = {:?}", first.node_id, first.value);
//! sim.stop().await;
//! # Ok(()) }
//! ```

pub mod model;
pub mod prng;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{bail, Context};
use opcua::{
    crypto::SecurityPolicy,
    nodes::{AccessLevel, ObjectBuilder, ReferenceDirection, Variable},
    server::{
        diagnostics::NamespaceMetadata,
        node_manager::memory::{simple_node_manager, SimpleNodeManager},
        ServerBuilder, ServerEndpoint, ServerHandle, ServerUserToken, SubscriptionCache,
        ANONYMOUS_USER_TOKEN_ID,
    },
    types::{
        BuildInfo, DataValue, DateTime, MessageSecurityMode, NodeId, ObjectId, ObjectTypeId,
        QualifiedName, ReferenceTypeId, StatusCode, VariableTypeId, Variant,
    },
};
use tokio::{
    net::TcpListener,
    sync::{broadcast, mpsc},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::model::{Machine, Sample, StepCtx};

/// Namespace of the `Factory` folder (under `Objects`).
pub const FACTORY_NAMESPACE: &str = "urn:opcua-sim:factory";
/// Namespace of the scale-mode variables `Scale.V<i>`.
pub const SCALE_NAMESPACE: &str = "urn:opcua-sim:scale";
/// Capacity of the change broadcast channel.
pub const CHANGE_CHANNEL_CAPACITY: usize = 65_536;

/// Simulator options.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// Interface to listen on, also used in the endpoint URL. Default `127.0.0.1`.
    pub host: String,
    /// TCP port; 0 = pick a free port.
    pub port: u16,
    /// Seed of all simulated behaviour.
    pub seed: u64,
    /// Machine update period in ms (default 1000).
    pub tick_ms: u64,
    /// Number of extra scale-mode variables `nsu=urn:opcua-sim:scale;s=Scale.V<i>` (0 = none).
    pub scale: usize,
    /// The scale variables all change every `scale_interval_ms`.
    pub scale_interval_ms: u64,
    /// The server's own PKI directory (self-signed certificate created on first start).
    pub pki_dir: PathBuf,
    /// Accepted user/password identity tokens.
    pub users: Vec<(String, String)>,
    /// Accept anonymous identity tokens.
    pub allow_anonymous: bool,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            host: "127.0.0.1".to_owned(),
            port: 4840,
            seed: 42,
            tick_ms: 1000,
            scale: 0,
            scale_interval_ms: 1000,
            pki_dir: default_pki_dir(),
            users: Vec::new(),
            allow_anonymous: true,
        }
    }
}

/// One value written by the simulator (machine variables and client-written setpoints; not the
/// scale-mode variables).
#[derive(Clone, Debug)]
pub struct Change {
    /// Expanded node id with namespace URI, e.g. `nsu=urn:opcua-sim:cnc;s=CNC1.SpindleSpeed`.
    pub node_id: String,
    pub value: Variant,
    pub status: StatusCode,
    /// Source timestamp, whole milliseconds.
    pub source_timestamp: DateTime,
}

/// A running simulator. Call [`Simulator::stop`] to shut it down.
pub struct Simulator {
    endpoint_url: String,
    port: u16,
    changes: broadcast::Sender<Change>,
    snapshot: Arc<Mutex<BTreeMap<String, Change>>>,
    handle: ServerHandle,
    token: CancellationToken,
    server_task: Option<JoinHandle<Result<(), String>>>,
    tasks: Vec<JoinHandle<()>>,
}

/// Dropping a simulator without [`Simulator::stop`] still shuts it down (in the background).
impl Drop for Simulator {
    fn drop(&mut self) {
        self.token.cancel();
        self.handle.cancel();
    }
}

/// Current wall-clock time truncated to whole milliseconds.
pub fn now_ms() -> DateTime {
    let t = DateTime::now().ticks();
    DateTime::from(t - t.rem_euclid(10_000))
}

fn data_value(sample: &Sample, ts: DateTime) -> DataValue {
    DataValue {
        value: Some(sample.0.clone()),
        status: Some(sample.1),
        source_timestamp: Some(ts),
        source_picoseconds: None,
        server_timestamp: Some(ts),
        server_picoseconds: None,
    }
}

fn to_f64(v: &Variant) -> Option<f64> {
    Some(match v {
        Variant::Double(x) => *x,
        Variant::Float(x) => *x as f64,
        Variant::SByte(x) => *x as f64,
        Variant::Byte(x) => *x as f64,
        Variant::Int16(x) => *x as f64,
        Variant::UInt16(x) => *x as f64,
        Variant::Int32(x) => *x as f64,
        Variant::UInt32(x) => *x as f64,
        Variant::Int64(x) => *x as f64,
        Variant::UInt64(x) => *x as f64,
        _ => return None,
    })
}

/// A machine bound to its node manager and node ids.
struct MachineRt {
    machine: Box<dyn Machine>,
    nm: Arc<SimpleNodeManager>,
    ids: Vec<NodeId>,
    names: Vec<String>,
    last: Vec<Sample>,
}

impl MachineRt {
    /// Write the values that changed since the last call; broadcast them.
    fn publish(
        &mut self,
        now: DateTime,
        buf: &mut Vec<Sample>,
        subs: &SubscriptionCache,
        tx: &broadcast::Sender<Change>,
        snapshot: &Mutex<BTreeMap<String, Change>>,
    ) {
        self.machine.values(buf);
        let mut changed = Vec::new();
        for (i, s) in buf.drain(..).enumerate() {
            if self.last[i] != s {
                self.last[i] = s;
                changed.push(i);
            }
        }
        if changed.is_empty() {
            return;
        }
        if let Err(e) = self.nm.set_values(
            subs,
            changed
                .iter()
                .map(|&i| (&self.ids[i], None, data_value(&self.last[i], now))),
        ) {
            warn!("set_values failed: {e}");
        }
        let mut snap = snapshot.lock().unwrap();
        for &i in &changed {
            let c = Change {
                node_id: self.names[i].clone(),
                value: self.last[i].0.clone(),
                status: self.last[i].1,
                source_timestamp: now,
            };
            snap.insert(c.node_id.clone(), c.clone());
            // No receiver is fine; a lagging receiver only loses its oldest entries.
            let _ = tx.send(c);
        }
    }
}

/// A client write of a setpoint: (machine index, variable index, value).
type WriteReq = (usize, usize, f64);

/// The simulator's PKI under the user's data directory (the XDG base directory rule):
/// `$XDG_DATA_HOME/opcua-sim/pki`, else `~/.local/share/opcua-sim/pki`. Persistent, so the
/// server certificate that clients trusted stays the same across restarts; never a fixed
/// folder under the temp dir (tests pass their own folder).
pub fn default_pki_dir() -> PathBuf {
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from(".opcua-sim"));
    data.join("opcua-sim").join("pki")
}

impl Simulator {
    /// Start the simulator; returns once the server listens.
    pub async fn start(opts: SimOptions) -> anyhow::Result<Simulator> {
        if !opts.allow_anonymous && opts.users.is_empty() {
            bail!("anonymous access disabled and no users configured: nobody could connect");
        }
        if opts.tick_ms == 0 || (opts.scale > 0 && opts.scale_interval_ms == 0) {
            bail!("tick_ms and scale_interval_ms must be > 0");
        }
        std::fs::create_dir_all(&opts.pki_dir)
            .with_context(|| format!("creating PKI dir {}", opts.pki_dir.display()))?;

        let listener = TcpListener::bind((opts.host.as_str(), opts.port))
            .await
            .with_context(|| format!("binding {}:{}", opts.host, opts.port))?;
        let port = listener.local_addr()?.port();
        let endpoint_url = format!("opc.tcp://{}:{}/", opts.host, port);

        let start = now_ms();
        let machines = model::factory(opts.seed, start);

        let mut user_token_ids: Vec<String> = Vec::new();
        if opts.allow_anonymous {
            user_token_ids.push(ANONYMOUS_USER_TOKEN_ID.to_owned());
        }
        let mut builder = ServerBuilder::new()
            .application_name("OPC UA Factory Simulator")
            .application_uri("urn:opcua-sim")
            .product_uri("urn:opcua-sim")
            .build_info(BuildInfo {
                product_uri: "urn:opcua-sim".into(),
                manufacturer_name: "aas-gateway project".into(),
                product_name: "opcua-sim".into(),
                software_version: env!("CARGO_PKG_VERSION").into(),
                build_number: "1".into(),
                build_date: start,
            })
            .create_sample_keypair(true)
            .certificate_path("own/cert.der")
            .private_key_path("private/private.pem")
            .pki_dir(&opts.pki_dir)
            // A simulator: every client certificate is trusted (see README).
            .trust_client_certs(true)
            .host(opts.host.clone())
            .port(port)
            .discovery_urls(vec![endpoint_url.clone()])
            .subscription_poll_interval_ms(10)
            .max_session_timeout_ms(300_000)
            .diagnostics_enabled(false);
        for (i, (user, pass)) in opts.users.iter().enumerate() {
            let id = format!("user{i}");
            builder = builder.add_user_token(&id, ServerUserToken::user_pass(user, pass));
            user_token_ids.push(id);
        }
        builder = builder
            .add_endpoint(
                "none",
                ServerEndpoint::new(
                    "/",
                    SecurityPolicy::None,
                    MessageSecurityMode::None,
                    &user_token_ids,
                ),
            )
            .add_endpoint(
                "basic256sha256_sign",
                ServerEndpoint::new(
                    "/",
                    SecurityPolicy::Basic256Sha256,
                    MessageSecurityMode::Sign,
                    &user_token_ids,
                ),
            )
            .add_endpoint(
                "basic256sha256_sign_encrypt",
                ServerEndpoint::new(
                    "/",
                    SecurityPolicy::Basic256Sha256,
                    MessageSecurityMode::SignAndEncrypt,
                    &user_token_ids,
                ),
            )
            .add_endpoint(
                "aes256sha256rsapss_sign_encrypt",
                ServerEndpoint::new(
                    "/",
                    SecurityPolicy::Aes256Sha256RsaPss,
                    MessageSecurityMode::SignAndEncrypt,
                    &user_token_ids,
                ),
            )
            .default_endpoint("none");

        {
            let l = builder.limits_mut();
            l.max_message_size = 64 * 1024 * 1024;
            l.max_chunk_count = 4096;
            l.max_array_length = 1_000_000;
            l.max_sessions = 100;
            let s = &mut l.subscriptions;
            s.min_sampling_interval_ms = 10.0;
            s.min_publishing_interval_ms = 10.0;
            s.max_queued_notifications = 100_000;
            s.max_monitored_items_per_sub = 250_000;
            s.max_monitored_item_queue_size = 1000;
            s.max_notifications_per_publish = 50_000;
            s.max_subscriptions_per_session = 100;
            s.max_pending_publish_requests = 100;
            s.max_publish_requests_per_subscription = 10;
            let o = &mut l.operational;
            o.max_nodes_per_read = 250_000;
            o.max_nodes_per_write = 250_000;
            o.max_nodes_per_browse = 10_000;
            o.max_nodes_per_register_nodes = 250_000;
            o.max_nodes_per_translate_browse_paths_to_node_ids = 10_000;
            o.max_monitored_items_per_call = 250_000;
            o.max_references_per_browse_node = 10_000;
            o.max_subscriptions_per_call = 100;
            o.max_nodes_per_method_call = 1000;
        }

        // One in-memory node manager per namespace.
        let mut ns_uris: Vec<&'static str> = vec![FACTORY_NAMESPACE];
        ns_uris.extend(machines.iter().map(|m| m.namespace_uri()));
        ns_uris.push(SCALE_NAMESPACE);
        for uri in &ns_uris {
            builder = builder.with_node_manager(simple_node_manager(
                NamespaceMetadata {
                    namespace_uri: (*uri).to_owned(),
                    ..Default::default()
                },
                uri,
            ));
        }

        // The server creates a missing key pair as two separate files: two simulators starting
        // at once on an empty PKI dir each wrote one, and one ended with the other's
        // certificate beside its own key. The lock makes the second find the pair complete.
        let lock_path = opts.pki_dir.join(".keypair.lock");
        let creating = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("opening {}", lock_path.display()))?;
        creating
            .lock()
            .with_context(|| format!("locking {}", lock_path.display()))?;
        let (server, handle) = builder
            .build()
            .map_err(|e| anyhow::anyhow!("building OPC UA server: {e}"))?;
        drop(creating);

        let nm_of = |uri: &str| -> anyhow::Result<(Arc<SimpleNodeManager>, u16)> {
            let nm = handle
                .node_managers()
                .get_by_name::<SimpleNodeManager>(uri)
                .with_context(|| format!("node manager {uri}"))?;
            let ns = handle
                .get_namespace_index(uri)
                .with_context(|| format!("namespace {uri}"))?;
            Ok((nm, ns))
        };

        // Objects/Factory
        let (fnm, fns) = nm_of(FACTORY_NAMESPACE)?;
        let factory_id = NodeId::new(fns, "Factory");
        {
            let mut asp = fnm.address_space().write();
            asp.add_folder(
                &factory_id,
                QualifiedName::new(fns, "Factory"),
                "Factory",
                &ObjectId::ObjectsFolder.into(),
            );
        }

        let (write_tx, write_rx) = mpsc::unbounded_channel::<WriteReq>();
        let (tx, _) = broadcast::channel(CHANGE_CHANNEL_CAPACITY);
        let snapshot = Arc::new(Mutex::new(BTreeMap::new()));

        let mut rts = Vec::new();
        for (mi, machine) in machines.into_iter().enumerate() {
            let uri = machine.namespace_uri();
            let (nm, ns) = nm_of(uri)?;
            let rt = populate_machine(mi, machine, nm, ns, &factory_id, start, &write_tx);
            {
                let mut snap = snapshot.lock().unwrap();
                for (i, s) in rt.last.iter().enumerate() {
                    snap.insert(
                        rt.names[i].clone(),
                        Change {
                            node_id: rt.names[i].clone(),
                            value: s.0.clone(),
                            status: s.1,
                            source_timestamp: start,
                        },
                    );
                }
            }
            rts.push(rt);
        }

        let scale = if opts.scale > 0 {
            let (nm, ns) = nm_of(SCALE_NAMESPACE)?;
            Some(populate_scale(
                &nm,
                ns,
                &factory_id,
                opts.scale,
                opts.seed,
                start,
            ))
            .map(|ids| (nm, ids))
        } else {
            None
        };

        let token = CancellationToken::new();
        let server_task = tokio::spawn(server.run_with(listener));
        let subs = handle.subscriptions().clone();
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(run_machines(
            rts,
            subs.clone(),
            tx.clone(),
            snapshot.clone(),
            write_rx,
            Duration::from_millis(opts.tick_ms),
            token.clone(),
        )));
        if let Some((nm, ids)) = scale {
            tasks.push(tokio::spawn(run_scale(
                nm,
                subs,
                ids,
                opts.seed,
                Duration::from_millis(opts.scale_interval_ms),
                token.clone(),
            )));
        }
        info!(
            "opcua-sim listening on {endpoint_url} (seed {}, tick {} ms, scale {})",
            opts.seed, opts.tick_ms, opts.scale
        );

        Ok(Simulator {
            endpoint_url,
            port,
            changes: tx,
            snapshot,
            handle,
            token,
            server_task: Some(server_task),
            tasks,
        })
    }

    /// `opc.tcp://HOST:PORT/`
    pub fn endpoint_url(&self) -> String {
        self.endpoint_url.clone()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Every value the simulator writes from now on (not the scale-mode variables).
    pub fn subscribe_changes(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// Last written value of every machine/type variable (initial values included), sorted by
    /// node id. Useful to know the values that were current before `subscribe_changes`.
    pub fn snapshot(&self) -> Vec<Change> {
        self.snapshot.lock().unwrap().values().cloned().collect()
    }

    /// Stop the simulation and the server; when this returns the port is free again.
    pub async fn stop(mut self) {
        self.token.cancel();
        for t in std::mem::take(&mut self.tasks) {
            let _ = t.await;
        }
        self.handle.cancel();
        if let Some(mut server_task) = self.server_task.take() {
            match tokio::time::timeout(Duration::from_secs(10), &mut server_task).await {
                Ok(Ok(Ok(()))) => debug!("server stopped"),
                Ok(Ok(Err(e))) => warn!("server ended with error: {e}"),
                Ok(Err(e)) => warn!("server task failed: {e}"),
                Err(_) => {
                    warn!("server did not stop within 10 s, aborting it");
                    server_task.abort();
                    let _ = server_task.await;
                }
            }
        }
        info!("opcua-sim stopped");
    }
}

fn populate_machine(
    mi: usize,
    machine: Box<dyn Machine>,
    nm: Arc<SimpleNodeManager>,
    ns: u16,
    factory_id: &NodeId,
    start: DateTime,
    write_tx: &mpsc::UnboundedSender<WriteReq>,
) -> MachineRt {
    let obj = machine.object();
    let uri = machine.namespace_uri();
    let obj_id = NodeId::new(ns, obj);
    let defs = machine.variables();
    let mut initial = Vec::new();
    machine.values(&mut initial);
    assert_eq!(
        initial.len(),
        defs.len(),
        "{obj}: values/variables mismatch"
    );

    let has_component: NodeId = ReferenceTypeId::HasComponent.into();
    let has_property: NodeId = ReferenceTypeId::HasProperty.into();
    let has_type_def: NodeId = ReferenceTypeId::HasTypeDefinition.into();
    let base_var: NodeId = VariableTypeId::BaseDataVariableType.into();
    let property_type: NodeId = VariableTypeId::PropertyType.into();

    let mut ids = Vec::new();
    let mut names = Vec::new();
    {
        let mut asp = nm.address_space().write();
        ObjectBuilder::new(&obj_id, QualifiedName::new(ns, obj), obj)
            .description(machine.description())
            .organized_by(factory_id.clone())
            .has_type_definition(ObjectTypeId::BaseObjectType)
            .insert(&mut *asp);

        for (def, sample) in defs.iter().zip(initial.iter()) {
            let id = NodeId::new(ns, format!("{obj}.{}", def.name));
            let rank = if def.array_len.is_some() { 1 } else { -1 };
            let mut var = Variable::new_data_value(
                &id,
                QualifiedName::new(ns, def.name),
                def.name,
                def.data_type,
                Some(rank),
                def.array_len,
                sample.0.clone(),
            );
            var.set_data_value(data_value(sample, start));
            var.set_minimum_sampling_interval(0.0);
            if def.writable.is_some() {
                let rw = AccessLevel::CURRENT_READ | AccessLevel::CURRENT_WRITE;
                var.set_access_level(rw);
                var.set_user_access_level(rw);
            }
            asp.insert(
                var,
                Some(&[
                    (&obj_id, &has_component, ReferenceDirection::Inverse),
                    (&base_var, &has_type_def, ReferenceDirection::Forward),
                ]),
            );
            ids.push(id);
            names.push(format!("nsu={uri};s={obj}.{}", def.name));
        }

        if let Some(plate) = machine.nameplate() {
            let ident_id = NodeId::new(ns, format!("{obj}.Identification"));
            ObjectBuilder::new(
                &ident_id,
                QualifiedName::new(ns, "Identification"),
                "Identification",
            )
            .description("Nameplate (OPC UA DI style)")
            .reference(
                obj_id.clone(),
                ReferenceTypeId::HasComponent,
                ReferenceDirection::Inverse,
            )
            .has_type_definition(ObjectTypeId::BaseObjectType)
            .insert(&mut *asp);
            for (name, value) in plate.variables() {
                let id = NodeId::new(ns, format!("{obj}.Identification.{name}"));
                let mut var = Variable::new(&id, QualifiedName::new(ns, name), name, value.clone());
                var.set_data_value(data_value(&(value, StatusCode::Good), start));
                asp.insert(
                    var,
                    Some(&[
                        (&ident_id, &has_property, ReferenceDirection::Inverse),
                        (&property_type, &has_type_def, ReferenceDirection::Forward),
                    ]),
                );
            }
        }
    }

    // Client-writable setpoints: validate synchronously, apply in the simulation task.
    for (vi, def) in defs.iter().enumerate() {
        if let Some((lo, hi)) = def.writable {
            let tx = write_tx.clone();
            nm.inner()
                .add_write_callback(ids[vi].clone(), move |dv, range| {
                    if !range.is_none() {
                        return StatusCode::BadIndexRangeInvalid;
                    }
                    let Some(v) = dv.value.as_ref().and_then(to_f64) else {
                        return StatusCode::BadTypeMismatch;
                    };
                    if !v.is_finite() || v < lo || v > hi {
                        return StatusCode::BadOutOfRange;
                    }
                    match tx.send((mi, vi, v)) {
                        Ok(()) => StatusCode::Good,
                        Err(_) => StatusCode::BadShutdown,
                    }
                });
        }
    }

    MachineRt {
        machine,
        nm,
        ids,
        names,
        last: initial,
    }
}

/// Value of scale variable `V<i>` at tick `k` (k = 0: the initial value). Public so that load
/// tests can tell a lost change from a value that did not change (rounded to 4 decimals, about
/// 1 in 10,000 ticks leaves a variable unchanged, and OPC UA reports changes only).
pub fn scale_value(seed: u64, i: usize, k: u64) -> f64 {
    let base = (i % 100) as f64;
    let v = base
        + 10.0 * (k as f64 * 0.2 + i as f64 * 0.37).sin()
        + prng::hash_unit(seed, i as u64, k) * 0.5;
    (v * 10_000.0).round() / 10_000.0
}

fn scale_sample(seed: u64, i: usize, k: u64, ts: DateTime) -> DataValue {
    DataValue {
        value: Some(Variant::Double(scale_value(seed, i, k))),
        status: Some(StatusCode::Good),
        source_timestamp: Some(ts),
        source_picoseconds: None,
        server_timestamp: Some(ts),
        server_picoseconds: None,
    }
}

fn populate_scale(
    nm: &SimpleNodeManager,
    ns: u16,
    factory_id: &NodeId,
    n: usize,
    seed: u64,
    start: DateTime,
) -> Vec<NodeId> {
    let obj_id = NodeId::new(ns, "Scale");
    let has_component: NodeId = ReferenceTypeId::HasComponent.into();
    let has_type_def: NodeId = ReferenceTypeId::HasTypeDefinition.into();
    let base_var: NodeId = VariableTypeId::BaseDataVariableType.into();
    let mut asp = nm.address_space().write();
    ObjectBuilder::new(&obj_id, QualifiedName::new(ns, "Scale"), "Scale")
        .description(format!("{n} bulk Double variables for load tests"))
        .organized_by(factory_id.clone())
        .has_type_definition(ObjectTypeId::BaseObjectType)
        .insert(&mut *asp);
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("V{i}");
        let id = NodeId::new(ns, format!("Scale.{name}"));
        let dv = scale_sample(seed, i, 0, start);
        let mut var = Variable::new_data_value(
            &id,
            QualifiedName::new(ns, name.as_str()),
            name.as_str(),
            opcua::types::DataTypeId::Double,
            Some(-1),
            None,
            dv.value.clone().unwrap_or_default(),
        );
        var.set_data_value(dv);
        asp.insert(
            var,
            Some(&[
                (&obj_id, &has_component, ReferenceDirection::Inverse),
                (&base_var, &has_type_def, ReferenceDirection::Forward),
            ]),
        );
        ids.push(id);
    }
    ids
}

async fn run_machines(
    mut rts: Vec<MachineRt>,
    subs: Arc<SubscriptionCache>,
    tx: broadcast::Sender<Change>,
    snapshot: Arc<Mutex<BTreeMap<String, Change>>>,
    mut writes: mpsc::UnboundedReceiver<WriteReq>,
    tick: Duration,
    token: CancellationToken,
) {
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + tick, tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = Vec::new();
    let dt_s = tick.as_secs_f64();
    loop {
        tokio::select! {
            _ = token.cancelled() => break,
            Some((mi, vi, v)) = writes.recv() => {
                let rt = &mut rts[mi];
                info!("client wrote {} = {v}", rt.names[vi]);
                rt.machine.write(vi, v);
                rt.publish(now_ms(), &mut buf, &subs, &tx, &snapshot);
            }
            _ = interval.tick() => {
                let now = now_ms();
                let mut ctx = StepCtx { now, dt_s, plant_kw: 0.0 };
                for rt in rts.iter_mut() {
                    rt.machine.step(&mut ctx);
                }
                for rt in rts.iter_mut() {
                    rt.publish(now, &mut buf, &subs, &tx, &snapshot);
                }
            }
        }
    }
}

async fn run_scale(
    nm: Arc<SimpleNodeManager>,
    subs: Arc<SubscriptionCache>,
    ids: Vec<NodeId>,
    seed: u64,
    period: Duration,
    token: CancellationToken,
) {
    const CHUNK: usize = 10_000;
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut k: u64 = 0;
    loop {
        tokio::select! {
            _ = token.cancelled() => break,
            _ = interval.tick() => {}
        }
        k += 1;
        let ts = now_ms();
        for (c, chunk) in ids.chunks(CHUNK).enumerate() {
            let base = c * CHUNK;
            if let Err(e) = nm.set_values(
                &subs,
                chunk
                    .iter()
                    .enumerate()
                    .map(|(j, id)| (id, None, scale_sample(seed, base + j, k, ts))),
            ) {
                warn!("scale set_values failed: {e}");
            }
            // Let readers and the publish machinery in between chunks.
            tokio::task::yield_now().await;
        }
    }
}
