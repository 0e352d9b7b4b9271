"""An independent Sparkplug B host application for the gateway's tests.

Decodes every Sparkplug message of one group with PyPI `pysparkplug` (its protobuf code is
generated from the official sparkplug_b.proto), resolving DDATA aliases through the DBIRTH it
decoded itself, and prints one JSON line per message on stdout:

  {"topic": ..., "type": "DDATA", "device": "CNC1", "seq": 7, "bdSeq": null,
   "metrics": [{"name": ..., "alias": ..., "value": ..., "ts": ..., "historical": false,
                "null": false, "datatype": 10, "props": {"engUnit": "rpm"}}]}

It also acts as the primary host: with --host-id it publishes its retained STATE
(`spBv1.0/STATE/<id>`, Sparkplug 3.0 JSON) online at start, with an offline STATE as its will.
Commands on stdin, one per line: `offline`, `online` (publish that STATE), `rebirth` (NCMD
Node Control/Rebirth to --node), `dcmd <device> <metric name> <DATATYPE> <JSON value>` (a DCMD
writing one metric; metric names have no spaces), `quit`. Prints {"type": "ready"} once subscribed.
"""

import argparse
import datetime
import json
import sys
import threading
import time

import paho.mqtt.client as mqtt
import pysparkplug as spb
from pysparkplug._protobuf import Payload as PbPayload

NS = "spBv1.0"


def now_ms():
    return int(time.time() * 1000)


def jsonable(v):
    if isinstance(v, (bytes, bytearray)):
        return list(v)
    if isinstance(v, tuple):
        return [jsonable(x) for x in v]
    if isinstance(v, datetime.datetime):
        return round(v.timestamp() * 1000)
    if isinstance(v, float) and v != v:
        return "NaN"
    return v


def props_of(raw):
    """Metric properties (name -> value) straight from the protobuf, per metric index."""
    out = []
    for m in PbPayload.FromString(raw).metrics:
        props = {}
        if m.HasField("properties"):
            for k, pv in zip(m.properties.keys, m.properties.values):
                field = pv.WhichOneof("value")
                props[k] = getattr(pv, field) if field else None
        out.append(props)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--node", required=True)
    ap.add_argument("--host-id")
    args = ap.parse_args()

    out_lock = threading.Lock()

    def emit(obj):
        with out_lock:
            sys.stdout.write(json.dumps(obj) + "\n")
            sys.stdout.flush()

    births = {}  # device (or None for the node) -> decoded birth
    client = mqtt.Client(client_id=f"sparkplug-test-host-{args.port}", clean_session=True)
    state_topic = f"{NS}/STATE/{args.host_id}" if args.host_id else None

    def state(online, timestamp=None):
        body = json.dumps({"online": online, "timestamp": timestamp or now_ms()})
        client.publish(state_topic, body, qos=1, retain=True).wait_for_publish()

    # Sparkplug 3.0: the will and the first online STATE carry the same timestamp, so that an
    # edge node takes the will (a crash) as news, not as an older message.
    born = now_ms()
    if state_topic:
        client.will_set(
            state_topic, json.dumps({"online": False, "timestamp": born}), qos=1, retain=True
        )
    subscribed = threading.Event()

    def on_connect(c, userdata, flags, rc):
        c.subscribe(f"{NS}/{args.group}/#", qos=1)

    def on_subscribe(c, userdata, mid, granted):
        subscribed.set()

    def on_message(c, userdata, msg):
        parts = msg.topic.split("/")
        kind = parts[2]
        device = parts[4] if len(parts) > 4 else None
        line = {"topic": msg.topic, "type": kind, "device": device, "seq": None, "bdSeq": None}
        try:
            if kind == "NBIRTH":
                p = spb.NBirth.decode(msg.payload)
                births[None] = p
            elif kind == "DBIRTH":
                p = spb.DBirth.decode(msg.payload)
                births[device] = p
            elif kind == "DDATA":
                p = spb.DData.decode(msg.payload, birth=births[device])
            elif kind == "NDEATH":
                p = spb.NDeath.decode(msg.payload)
                line["bdSeq"] = p.bd_seq_metric.value
                emit(line)
                return
            elif kind == "DDEATH":
                p = spb.DDeath.decode(msg.payload)
                line["seq"] = p.seq
                emit(line)
                return
            else:  # NCMD/DCMD: our own commands
                return
        except Exception as e:  # a decoding failure is a test failure: say it
            emit({"topic": msg.topic, "type": "ERROR", "error": repr(e)})
            return
        line["seq"] = p.seq
        props = props_of(msg.payload)
        metrics = []
        for i, m in enumerate(p.metrics):
            if m.name == "bdSeq":
                line["bdSeq"] = m.value
            metrics.append(
                {
                    "name": m.name,
                    "alias": m.alias,
                    "value": jsonable(m.value),
                    "ts": m.timestamp,
                    "historical": m.is_historical,
                    "null": m.is_null,
                    "datatype": int(m.datatype),
                    "props": props[i],
                }
            )
        line["metrics"] = metrics
        emit(line)

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect("127.0.0.1", args.port, keepalive=30)
    client.loop_start()
    if not subscribed.wait(15):
        emit({"type": "ERROR", "error": "not subscribed within 15 s"})
        sys.exit(1)
    if state_topic:
        state(True, born)
    emit({"type": "ready"})

    for cmd in sys.stdin:
        cmd = cmd.strip()
        if cmd == "offline":
            state(False)
        elif cmd == "online":
            state(True)
        elif cmd == "rebirth":
            ncmd = spb.NCmd(
                timestamp=now_ms(),
                metrics=(
                    spb.Metric(
                        timestamp=now_ms(),
                        name="Node Control/Rebirth",
                        datatype=spb.DataType.BOOLEAN,
                        value=True,
                    ),
                ),
            )
            topic = f"{NS}/{args.group}/NCMD/{args.node}"
            client.publish(topic, ncmd.encode(include_dtypes=True), qos=0).wait_for_publish()
        elif cmd.startswith("dcmd "):
            # dcmd <device> <metric name> <DATATYPE> <JSON value>
            _, device, name, dtype, value = cmd.split(" ", 4)
            dcmd = spb.DCmd(
                timestamp=now_ms(),
                metrics=(
                    spb.Metric(
                        timestamp=now_ms(),
                        name=name,
                        datatype=spb.DataType[dtype],
                        value=json.loads(value),
                    ),
                ),
            )
            topic = f"{NS}/{args.group}/DCMD/{args.node}/{device}"
            client.publish(topic, dcmd.encode(include_dtypes=True), qos=0).wait_for_publish()
        elif cmd == "quit":
            break
        emit({"type": "done", "cmd": cmd})
    client.loop_stop()
    client.disconnect()


if __name__ == "__main__":
    main()
