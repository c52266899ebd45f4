#!/usr/bin/env python3
"""A STAND-IN for talosctl (the real one cannot run here: it needs Talos
nodes). It keeps each node's state in the JSON file $TALOSCTL_STANDIN_STATE,
appends every argv to $TALOSCTL_STANDIN_STATE.log, and prints what the real
tool prints, by the documented behaviour each rule below cites.

State: {"nodes": {ip: {"reachable": bool, "etcd": "running"|"failed"|
"preparing"|"rebooting", "member": bool, "wiped": bool, "boot_polls": n}},
"bootstrapped": ip|null, "join_polls": n, "snapshot": path|null}, and for
tests: "stuck_rebooting", "no_join" (a node never gets there),
"reset_drops", "bootstrap_drops" (the command takes effect, then the
connection drops before talosctl hears back).

Rules:
* T1 `service etcd` prints the NODE/ID/STATE/HEALTH/EVENTS block of
  talosctl's service view (cmd/talosctl/cmd/talos/service.go); a node whose
  apid does not answer fails with gRPC `code = Unavailable`.
* T2 `etcd members` lists the members as a table (NODE, ID, HOSTNAME,
  PEER URLS, CLIENT URLS, LEARNER); without quorum it fails with
  `rpc error: code = Unavailable` (cmd/talosctl/cmd/talos/etcd.go).
* T3 `reset --graceful=false --reboot --system-labels-to-wipe=EPHEMERAL`
  wipes EPHEMERAL (etcd's data) and reboots: the node does not answer for
  a while, then etcd waits in `Preparing` for a bootstrap (Talos docs,
  "Disaster Recovery").
* T4 `bootstrap --recover-from=FILE` starts etcd from the snapshot on that
  node only when etcd waits for it; a second one fails with `code =
  AlreadyExists desc = etcd data directory is not empty`, and one before
  the reset with `code = FailedPrecondition` (machined's Bootstrap API,
  internal/app/machined/internal/server/v1alpha1/v1alpha1_server.go).
  The other control planes join once the first runs.
* T5 `health` waits for etcd on every control plane and succeeds only then.
* T6 `read /proc/sys/kernel/random/boot_id` prints the node's boot id (a
  new one after every reboot: the kernel's random/boot_id).
* T7 `version [--client]` prints the `Client:` block and, per node, a
  `Server:` block with `NODE:` and `Tag:` (pkg/version's PrintLongVersion,
  cmd/talosctl/cmd/talos/version.go); a node that does not answer fails
  with `code = Unavailable`. The client's tag is "client_tag" in the state
  (default v1.11.1), a node's "tag" (default the client's).
"""

import json
import os
import sys

STATE = os.environ["TALOSCTL_STANDIN_STATE"]


def load():
    with open(STATE) as f:
        return json.load(f)


def save(st):
    tmp = STATE + ".tmp"
    with open(tmp, "w") as f:
        json.dump(st, f, indent=1)
    os.replace(tmp, STATE)


def unavailable(node, what):
    return (
        f'{node}: rpc error: code = Unavailable desc = connection error: desc = '
        f'"transport: Error while dialing: dial tcp {node}:50000: connect: no route to host"'
    )


def fail(what, errors):
    sys.stderr.write(f"error {what}: {len(errors)} error occurred:\n")
    for e in errors:
        sys.stderr.write(f"\t* {e}\n")
    sys.stderr.write("\n")
    sys.exit(1)


def boot_id(n):
    return f"{n.get('boot', 1):08x}-5e1f-4c2a-9d3b-000000000000"


def service_block(node, n):
    state = n["etcd"]
    if state == "running-fail":
        return (
            f"NODE     {node}\nID       etcd\nSTATE    Running\nHEALTH   Fail\n"
            "LAST HEALTH MESSAGE   context deadline exceeded\n"
            "EVENTS   [Running]: Health check failed: context deadline exceeded (20s ago)\n"
        )
    if state == "running":
        return (
            f"NODE     {node}\nID       etcd\nSTATE    Running\nHEALTH   OK\n"
            "EVENTS   [Running]: Health check successful (12s ago)\n"
            "         [Running]: Started task etcd (PID 2811) for container etcd (15s ago)\n"
            "         [Preparing]: Creating service runner (16s ago)\n"
            "         [Preparing]: Running pre state (20s ago)\n"
        )
    if state == "preparing":
        return (
            f"NODE     {node}\nID       etcd\nSTATE    Preparing\nHEALTH   ?\n"
            "EVENTS   [Preparing]: Running pre state (30s ago)\n"
            "         [Waiting]: Waiting for service \"cri\" to be \"up\" (35s ago)\n"
        )
    return (
        f"NODE     {node}\nID       etcd\nSTATE    Failed\nHEALTH   Fail\n"
        "LAST HEALTH MESSAGE   context deadline exceeded\n"
        "EVENTS   [Failed]: Failed running service: error running etcd: context deadline exceeded (1m ago)\n"
        "         [Running]: Started task etcd (PID 2811) for container etcd (3m ago)\n"
    )


def main():
    argv = sys.argv[1:]
    with open(STATE + ".log", "a") as log:
        log.write(json.dumps(argv) + "\n")
    nodes, rest, i = [], [], 0
    while i < len(argv):
        a = argv[i]
        if a in ("-n", "--nodes"):
            nodes = argv[i + 1].split(",")
            i += 2
        elif a in ("--talosconfig", "--context", "-e", "--endpoints"):
            i += 2
        else:
            rest.append(a)
            i += 1
    st = load()
    cmd = rest[0] if rest else ""

    def tick_reboot(n):
        # T3: a rebooting node answers again after one look.
        if n["etcd"] == "rebooting" and not st.get("stuck_rebooting"):
            n["boot_polls"] = n.get("boot_polls", 0) + 1
            if n["boot_polls"] > 1:
                n["etcd"] = "preparing"
                n["reachable"] = True

    if cmd == "version":
        tag = st.get("client_tag", "v1.11.1")
        long = lambda t: (
            f"\tTag:         {t}\n\tSHA:         e2c0a6e3\n\tBuilt:       \n"
            "\tGo version:  go1.24.6\n\tOS/Arch:     linux/amd64\n"
        )
        sys.stdout.write("Client:\n" + long(tag))
        if "--client" in rest:
            return
        errors = []
        for node in nodes:
            n = st["nodes"][node]
            if not n["reachable"] or n["etcd"] == "rebooting":
                errors.append(unavailable(node, "version"))
            else:
                sys.stdout.write(
                    f"Server:\n\tNODE:        {node}\n" + long(n.get("tag", tag)) + "\tEnabled:     RBAC\n"
                )
        if errors:
            fail("getting version", errors)
        return

    if cmd == "service" and rest[1:] == ["etcd"]:
        out, errors = [], []
        for node in nodes:
            n = st["nodes"][node]
            tick_reboot(n)
            if not n["reachable"] or n["etcd"] == "rebooting":
                errors.append(unavailable(node, "service"))
            else:
                out.append(service_block(node, n))
        save(st)
        sys.stdout.write("\n".join(out))
        if errors:
            fail("getting service", errors)
        return

    if cmd == "etcd" and rest[1:] == ["members"]:
        boot = st.get("bootstrapped")
        if boot:
            # T4: the others join, one per look.
            for node, n in st["nodes"].items():
                if n["etcd"] == "preparing" and node != boot and st["join_polls"] >= 1 and not st.get("no_join"):
                    n["etcd"], n["member"] = "running", True
                    break
            st["join_polls"] += 1
            save(st)
        members = [(ip, n) for ip, n in st["nodes"].items() if n["member"] and n["etcd"] in ("running", "running-fail")]
        quorum = len(members) * 2 > len(st["nodes"]) or (boot and members)
        if not quorum or not all(st["nodes"][x]["reachable"] for x in nodes):
            fail(
                "getting members",
                [f"{node}: rpc error: code = Unavailable desc = etcdserver: no leader" for node in nodes],
            )
        print("NODE            ID                 HOSTNAME      PEER URLS                    CLIENT URLS                  LEARNER")
        for k, (ip, _) in enumerate(members):
            print(f"{nodes[0]:<15} {k + 1:016x}   talos-cp-{k + 1}    https://{ip}:2380   https://{ip}:2379   false")
        return

    if cmd == "read" and rest[1:] == ["/proc/sys/kernel/random/boot_id"]:
        node = nodes[0]
        n = st["nodes"][node]
        tick_reboot(n)
        save(st)
        if not n["reachable"] or n["etcd"] == "rebooting":
            fail("reading file", [unavailable(node, "read")])
        print(boot_id(n))
        return

    if cmd == "reset":
        assert "--graceful=false" in rest and "--reboot" in rest, rest
        assert "--system-labels-to-wipe=EPHEMERAL" in rest, rest
        denied = []
        for node in nodes:
            n = st["nodes"][node]
            if not n["reachable"]:
                save(st)
                fail("executing reset", [unavailable(node, "reset")])
            if node in st.get("reset_denied", []):
                denied.append(f"{node}: rpc error: code = PermissionDenied desc = not authorized")
                continue
            n.update({"etcd": "rebooting", "member": False, "wiped": True, "boot_polls": 0,
                      "boot": n.get("boot", 1) + 1})
        save(st)
        if denied:
            fail("executing reset", denied)
        if st.get("reset_drops"):
            # The reboot cuts the connection before talosctl hears back.
            fail("executing reset", [f"{nodes[0]}: rpc error: code = Unavailable desc = error reading from server: EOF"])
        return

    if cmd == "bootstrap":
        node = nodes[0]
        n = st["nodes"][node]
        if st.get("bootstrapped"):
            fail("executing bootstrap", [f"{node}: rpc error: code = AlreadyExists desc = etcd data directory is not empty"])
        if n["etcd"] != "preparing":
            fail("executing bootstrap", [f"{node}: rpc error: code = FailedPrecondition desc = bootstrap is not available yet"])
        recover = [a for a in rest if a.startswith("--recover-from=")]
        st["snapshot"] = recover[0].split("=", 1)[1] if recover else None
        if st["snapshot"]:
            # talosctl opens and uploads the file; etcd checks a snapshot's
            # SHA-256 trailer unless told to skip it (etcdutl snapshot restore).
            try:
                data = open(st["snapshot"], "rb").read()
            except OSError as e:
                sys.stderr.write(f"error opening snapshot: {e}\n")
                sys.exit(1)
            import hashlib
            if "--recover-skip-hash-check" not in rest and hashlib.sha256(data[:-32]).digest() != data[-32:]:
                fail("executing bootstrap", [f"{node}: rpc error: code = Unknown desc = snapshot file integrity check failed"])
        st["skip_hash_check"] = "--recover-skip-hash-check" in rest
        st["bootstrapped"] = node
        n["etcd"], n["member"] = "running", True
        st["join_polls"] = 0
        save(st)
        if st.get("bootstrap_drops"):
            fail("executing bootstrap", [f"{node}: rpc error: code = Unavailable desc = error reading from server: EOF"])
        return

    if cmd == "health":
        cps = []
        for j, a in enumerate(rest):
            if a.startswith("--control-plane-nodes"):
                cps = (a.split("=", 1)[1] if "=" in a else rest[j + 1]).split(",")
        for cp in cps:
            print(f"discovered nodes: control plane: {cps}")
            break
        print("waiting for etcd to be healthy: ...")
        bad = [cp for cp in cps if st["nodes"][cp]["etcd"] != "running"]
        if bad:
            print(f"waiting for etcd to be healthy: etcd not running on {bad[0]}")
            sys.stderr.write(f"healthcheck error: rpc error: code = DeadlineExceeded desc = etcd is not healthy on {bad[0]}\n")
            sys.exit(1)
        print("waiting for etcd to be healthy: OK")
        print("waiting for etcd members to be consistent across nodes: OK")
        print("waiting for all k8s nodes to report ready: OK")
        return

    sys.stderr.write(f"talosctl stand-in: unknown command {rest}\n")
    sys.exit(2)


main()
