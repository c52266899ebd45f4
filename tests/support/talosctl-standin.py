#!/usr/bin/env python3
"""A STAND-IN for talosctl (the real one cannot run here: it needs Talos
nodes). It keeps each node's state in the JSON file $TALOSCTL_STANDIN_STATE,
appends every argv to $TALOSCTL_STANDIN_STATE.log, and prints what the real
tool prints, by the documented behaviour each rule below cites.

State: {"nodes": {ip: {"reachable": bool, "etcd": "running"|"failed"|
"preparing"|"rebooting"|"restoring"|"restore-failed"|"join-timeout",
"member": bool, "wiped": bool, "boot_polls": n, "db": path|absent,
"machine_type": str}}, "bootstrapped": ip|null, "join_polls": n,
"snapshot": path|null}, and for tests: "stuck_rebooting", "no_join" (a
node never gets there), "reset_drops", "bootstrap_drops" (the command
takes effect, then the connection drops before talosctl hears back),
"members_fail_fast" (etcd members fails at once instead of blocking),
"members_hang" (a Running etcd with failing health that does not answer
either: a wedged etcd, its disk stalled),
"join_timeout" (nodes that give up waiting for the bootstrap).
Talos v1.11.6 source throughout (same as v1.11.0 for these files).

Rules:
* T1 `service etcd` prints the NODE/ID/STATE/HEALTH/EVENTS block of
  talosctl's service view (cmd/talosctl/cmd/talos/service.go); a node whose
  apid does not answer fails with gRPC `code = Unavailable`.
* T2 `etcd members` lists the members as a table (NODE, ID, HOSTNAME,
  PEER URLS, CLIENT URLS, LEARNER); without quorum it fails with
  `rpc error: code = Unavailable` (cmd/talosctl/cmd/talos/etcd.go). It
  runs on the node through a local etcd client (internal/pkg/etcd/etcd.go
  `NewLocalClient`, no WithBlock) whose calls wait for readiness (etcd
  v3.6.4 client/v3/options.go `defaultWaitForReady`), with no deadline in
  machined or talosctl: where etcd does not listen (not Running) it
  blocks. The stand-in sleeps there (its pid in $STATE.pids).
* T3 `reset --graceful=false --reboot --system-labels-to-wipe=EPHEMERAL`
  wipes EPHEMERAL (etcd's data) and reboots: the node does not answer for
  a while, then etcd waits in `Preparing` for a bootstrap (Talos docs,
  "Disaster Recovery"). Without `--wait=false` talosctl tracks the reset
  until the node is back, up to 30 minutes (cmd/talosctl/cmd/talos/
  track.go: `--wait` defaults to true): the stand-in then blocks.
* T4 `bootstrap --recover-from=FILE` prints `recovering from snapshot
  "FILE": hash …, revision …, total keys …, total size …`, uploads the
  file and asks for the bootstrap (cmd/talosctl/cmd/talos/bootstrap.go);
  it returns once the service entered its run (system.go `Start`), before
  the restore, which runs in etcd's pre stage (services/etcd.go
  `recoverFromSnapshot`): a snapshot whose SHA-256 trailer is wrong (and
  no --recover-skip-hash-check) fails there, the service Failed with
  `Failed to run pre stage: error recovering from the snapshot: …` while
  talosctl exited 0; the data dir is then not empty. A second bootstrap
  fails with `code = AlreadyExists desc = etcd data directory is not
  empty` whether the first restore worked or not, one before the reset
  with `code = FailedPrecondition desc = bootstrap is not available yet`
  (v1alpha1_server.go `Bootstrap`). The other control planes join once
  the first runs.
* T5 `health` waits for etcd on every control plane and succeeds only then.
* T6 `read /proc/sys/kernel/random/boot_id` prints the node's boot id (a
  new one after every reboot: the kernel's random/boot_id).
* T7 `version [--client]` prints the `Client:` block, then `Server:` once
  (before it connects), then per node `NODE:` and its long version block
  (cmd/talosctl/cmd/talos/version.go); a node that does not answer fails
  with `code = Unavailable`. The client's tag is "client_tag" in the state
  (default v1.11.1), a node's "tag" (default the client's).
* T8 `cp /var/lib/etcd/member/snap/db DIR` (cmd/talosctl/cmd/talos/
  copy.go) creates DIR and extracts the file into it as DIR/db (a tar
  entry named by the base name), printing nothing; an existing DIR/db is
  not overwritten (O_EXCL: `error creating file`); a missing file fails
  with the node's lstat error. Single node only.
* T9 `get machinetype` prints NODE NAMESPACE TYPE ID VERSION TYPE, a row
  per node (cmd/talosctl/cmd/talos/output/table.go; the resource's column
  is `Type`), the value `controlplane`, `init` or `worker`
  (pkg/machinery/config/machine/machine.go).
* T10 a node waits for the bootstrap in `Preparing` for at most
  `constants.EtcdJoinTimeout` (30 minutes, services/etcd.go
  `buildInitialCluster`), then its etcd is Failed with `Failed to run pre
  stage: failed to build initial etcd cluster: … timeout`.
* T11 `health` prints its progress on stderr (cmd/talosctl/cmd/talos/
  health.go, pkg/reporter: os.Stderr).
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
    if state == "restore-failed":
        return (
            f"NODE     {node}\nID       etcd\nSTATE    Failed\nHEALTH   ?\n"
            "EVENTS   [Failed]: Failed to run pre stage: error recovering from the snapshot: snapshot missing hash but --skip-hash-check=false (5s ago)\n"
            "         [Preparing]: Running pre state (7s ago)\n"
            "         [Finished]: Bootstrap requested (8s ago)\n"
        )
    if state == "join-timeout":
        return (
            f"NODE     {node}\nID       etcd\nSTATE    Failed\nHEALTH   ?\n"
            "EVENTS   [Failed]: Failed to run pre stage: failed to build initial etcd cluster: failed to build cluster arguments: 1 error(s) occurred:\n"
            "\ttimeout (2m ago)\n"
            "         [Preparing]: Running pre state (32m ago)\n"
        )
    if state in ("preparing", "restoring"):
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

    def tick_restore(n):
        # T4: the restore runs after bootstrap returned.
        if n["etcd"] == "restoring":
            n["etcd"] = "restore-failed" if n.get("restore_fails") else "running"

    def tick_join_timeout(node, n):
        # T10: a node that gave up waiting for the bootstrap.
        if n["etcd"] == "preparing" and node in st.get("join_timeout", []) and n.get("boot_polls", 0) > 1:
            n["etcd"] = "join-timeout"

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
        sys.stdout.write("Server:\n")
        errors = []
        for node in nodes:
            n = st["nodes"][node]
            if not n["reachable"] or n["etcd"] == "rebooting":
                errors.append(unavailable(node, "version"))
            else:
                sys.stdout.write(
                    f"\tNODE:        {node}\n" + long(n.get("tag", tag)) + "\tEnabled:     RBAC\n"
                )
        if errors:
            fail("getting version", errors)
        return

    if cmd == "service" and rest[1:] == ["etcd"]:
        out, errors = [], []
        for node in nodes:
            n = st["nodes"][node]
            tick_reboot(n)
            tick_restore(n)
            tick_join_timeout(node, n)
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
        n0 = st["nodes"].get(nodes[0], {})
        wedged = st.get("members_hang") and n0.get("etcd") == "running-fail"
        if wedged or (n0.get("reachable") and n0.get("etcd") not in ("running", "running-fail") and not st.get("members_fail_fast")):
            # T2: the local etcd client waits for an etcd that does not listen.
            with open(STATE + ".pids", "a") as f:
                f.write(f"{os.getpid()}\n")
            import time
            time.sleep(3600)
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

    if cmd == "cp":
        assert len(nodes) == 1, "copy: one node only"
        src, dest = rest[1], rest[2]
        n = st["nodes"][nodes[0]]
        os.makedirs(dest, exist_ok=True)
        if not n["reachable"] or n["etcd"] == "rebooting":
            sys.stderr.write(f"error copying: {unavailable(nodes[0], 'copy')}\n")
            sys.exit(1)
        db = n.get("db") if src == "/var/lib/etcd/member/snap/db" else None
        if not db:
            sys.stderr.write(f"error initializing gzip: lstat {src}: no such file or directory\n")
            sys.exit(1)
        out = os.path.join(dest, os.path.basename(src))
        if os.path.exists(out):
            sys.stderr.write(f"error creating file \"{out}\" mode -rw-------: open {out}: file exists\n")
            sys.exit(1)
        with open(db, "rb") as f, open(out, "wb") as o:
            o.write(f.read())
        return

    if cmd == "get" and rest[1:] == ["machinetype"]:
        print("NODE            NAMESPACE   TYPE          ID             VERSION   TYPE")
        errors = []
        for node in nodes:
            n = st["nodes"][node]
            if not n["reachable"] or n["etcd"] == "rebooting":
                errors.append(unavailable(node, "get"))
                continue
            print(f"{node:<15} config      MachineType   machine-type   2         {n.get('machine_type', 'controlplane')}")
        if errors:
            fail("getting resources", errors)
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
        if "--wait=false" not in rest:
            # T3: tracking the reboot; it takes minutes on real hardware.
            with open(STATE + ".pids", "a") as f:
                f.write(f"{os.getpid()}\n")
            import time
            time.sleep(3600)
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
        n["restore_fails"] = False
        if st["snapshot"]:
            # talosctl reads and uploads the file; etcd checks a snapshot's
            # SHA-256 trailer later, in the pre stage, unless told to skip it
            # (etcdutl snapshot restore).
            try:
                data = open(st["snapshot"], "rb").read()
            except OSError as e:
                sys.stderr.write(f"error opening snapshot: {e}\n")
                sys.exit(1)
            import hashlib
            print(f"recovering from snapshot \"{st['snapshot']}\": hash 9c29e3de, revision 21, total keys 24, total size {len(data)}")
            if "--recover-skip-hash-check" not in rest and hashlib.sha256(data[:-32]).digest() != data[-32:]:
                n["restore_fails"] = True
            if st.get("restore_fails_once"):
                n["restore_fails"] = True
                st["restore_fails_once"] = False
        st["skip_hash_check"] = "--recover-skip-hash-check" in rest
        st["bootstrapped"] = node
        n["etcd"], n["member"] = "restoring", True
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
        err = sys.stderr  # T11
        err.write(f"discovered nodes: control plane: {cps}\n")
        err.write("waiting for etcd to be healthy: ...\n")
        bad = [cp for cp in cps if st["nodes"][cp]["etcd"] != "running"]
        if bad:
            err.write(f"waiting for etcd to be healthy: etcd not running on {bad[0]}\n")
            err.write(f"healthcheck error: rpc error: code = DeadlineExceeded desc = etcd is not healthy on {bad[0]}\n")
            sys.exit(1)
        err.write("waiting for etcd to be healthy: OK\n")
        err.write("waiting for etcd members to be consistent across nodes: OK\n")
        err.write("waiting for all k8s nodes to report ready: OK\n")
        return

    sys.stderr.write(f"talosctl stand-in: unknown command {rest}\n")
    sys.exit(2)


main()
