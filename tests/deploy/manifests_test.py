#!/usr/bin/python3
"""Checks of poold's deployment files: deploy/kubernetes/*.yaml, Dockerfile and
deploy/defrag-pods.sh.

The manifests must parse and say what matters: poold is a native sidecar
(initContainers entry with restartPolicy: Always); its probes point at what
poold serves (the socket or port of its own flags, the health service); every
container has a restricted securityContext; --memory_limit_bytes leaves room
under the container memory limit for queued requests and the process;
terminationGracePeriodSeconds covers poold's shutdown; the socket is in an
emptyDir that poold and the app both mount and the app may open. The
Dockerfile must agree with the manifests (numeric non-root user, exec-form
ENTRYPOINT, STOPSIGNAL). defrag-pods.sh runs against a fake kubectl.

Usage: manifests_test.py [--repo DIR] [--poold PATH] [unittest arguments]
  --repo   repository root (default: two folders up from this file)
  --poold  a poold binary: also check that it knows every flag the manifests
           pass it (test class PooldFlagsTest; skipped without --poold)
Needs Debian's python3-yaml.
"""

import os
import re
import stat
import subprocess
import sys
import tempfile
import textwrap
import unittest

try:
    import yaml
except ImportError:
    sys.exit("manifests_test: python3-yaml is missing: apt-get install python3-yaml")

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
POOLD = None

# poold's own defaults (server/main.cc, README.md), used for flags the
# manifest leaves out.
POOLD_DEFAULTS = {
    "listen": "127.0.0.1:50051",
    "unix_socket": "",
    "channel_capacity": "1024",
    "max_block_bytes": "67108864",
    "max_message_bytes": "68157440",
    "shutdown_grace": "10s",
    "shutdown_drain": "0",
    "memory_limit_bytes": "0",
}
# Memory the poold container needs besides the pools (--memory_limit_bytes)
# and the queued requests: the process itself (about 20 MiB resident idle),
# exec probes (a poolctl process is about 17 MiB resident; liveness and
# readiness may overlap), gRPC buffers of responses being sent. Measured by
# deploy/verify-image.sh; see deploy/README.md.
PROCESS_HEADROOM_BYTES = 64 << 20
# What the app's own shutdown may take before poold gets SIGTERM.
APP_SHUTDOWN_SECONDS = 10
HEALTH_SERVICES = ("", "poold.v1.PoolService")


def parse_quantity(value):
    """Kubernetes resource quantity (memory) -> bytes."""
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value))
    if not match:
        raise ValueError(f"bad quantity {value!r}")
    number, suffix = float(match.group(1)), match.group(2)
    factors = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
               "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    if suffix not in factors:
        raise ValueError(f"unknown quantity suffix in {value!r}")
    return int(number * factors[suffix])


def parse_duration(value):
    """abseil duration flag ("10s", "500ms", "1m", "0", "inf") -> seconds."""
    if value in ("0", ""):
        return 0.0
    if value == "inf":
        return float("inf")
    units = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
             "h": 3600.0}
    total, pos = 0.0, 0
    for match in re.finditer(r"([0-9.]+)(ns|us|ms|s|m|h)", value):
        if match.start() != pos:
            break
        total += float(match.group(1)) * units[match.group(2)]
        pos = match.end()
    if pos != len(value):
        raise ValueError(f"bad duration {value!r}")
    return total


def parse_flags(args):
    """["--a=1", "--b", "2"] -> {"a": "1", "b": "2"}; flags only."""
    flags, i = {}, 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise ValueError(f"not a flag: {arg!r}")
        name, sep, value = arg[2:].partition("=")
        if not sep:
            if i + 1 < len(args) and not args[i + 1].startswith("--"):
                value, i = args[i + 1], i + 1
            else:
                value = "true"
        flags[name] = value
        i += 1
    return flags


def load_documents():
    folder = os.path.join(REPO, "deploy", "kubernetes")
    documents = []
    for name in sorted(os.listdir(folder)):
        if name.endswith((".yaml", ".yml")):
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                for doc in yaml.safe_load_all(f):
                    if doc is not None:
                        documents.append((name, doc))
    return documents


def pod_specs(documents):
    """(file, kind/name, pod spec) of every workload in the manifests."""
    for name, doc in documents:
        kind = doc.get("kind")
        spec = doc.get("spec", {})
        if kind == "Pod":
            pod = spec
        elif kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet",
                      "Job"):
            pod = spec["template"]["spec"]
        elif kind == "CronJob":
            pod = spec["jobTemplate"]["spec"]["template"]["spec"]
        else:
            continue
        yield name, f"{kind}/{doc['metadata']['name']}", pod


def flagfile_flags(path, pod):
    """The flags in the ConfigMap file at `path` of `pod`'s poold."""
    documents = load_documents()
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    for c in pod.get("initContainers", []) + pod.get("containers", []):
        for mount in c.get("volumeMounts") or []:
            prefix = mount["mountPath"].rstrip("/") + "/"
            volume = volumes.get(mount["name"], {})
            if path.startswith(prefix) and "configMap" in volume:
                for _, doc in documents:
                    if (doc.get("kind") == "ConfigMap" and
                            doc["metadata"]["name"] ==
                            volume["configMap"]["name"]):
                        return parse_flags(
                            doc["data"][path[len(prefix):]].split())
    return {}


def is_poold(container):
    """A container that runs poold (the image's entrypoint, or named so)."""
    command = container.get("command") or []
    return (container.get("name") == "poold" and not command) or (
        bool(command) and command[0].endswith("/poold"))


def effective_security(pod, container):
    """Container securityContext over the pod's (the fields both have)."""
    merged = {k: v for k, v in (pod.get("securityContext") or {}).items()
              if k in ("runAsNonRoot", "runAsUser", "runAsGroup",
                       "seccompProfile")}
    merged.update(container.get("securityContext") or {})
    return merged


def dockerfile_instructions():
    """[(INSTRUCTION, argument text)] of ./Dockerfile, continuations joined."""
    with open(os.path.join(REPO, "Dockerfile"), encoding="utf-8") as f:
        text = f.read()
    text = re.sub(r"\\\n", " ", text)
    result = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        result.append((word.upper(), rest.strip()))
    return result


class ManifestTest(unittest.TestCase):
    """The Kubernetes manifests."""

    @classmethod
    def setUpClass(cls):
        cls.documents = load_documents()
        cls.workloads = []
        for file_name, label, pod in pod_specs(cls.documents):
            sidecars = [c for c in pod.get("initContainers") or []
                        if is_poold(c)]
            if sidecars:
                cls.workloads.append((file_name, label, pod, sidecars[0]))

    def test_documents_parse_and_are_objects(self):
        self.assertTrue(self.documents, "no YAML document in deploy/kubernetes")
        for file_name, doc in self.documents:
            with self.subTest(file=file_name, kind=doc.get("kind")):
                self.assertIsInstance(doc, dict)
                self.assertIn("apiVersion", doc)
                self.assertIn("kind", doc)
                self.assertTrue(doc.get("metadata", {}).get("name"))

    def test_a_workload_has_poold_as_native_sidecar(self):
        self.assertTrue(self.workloads,
                        "no workload with poold in initContainers")
        for _, label, pod, poold in self.workloads:
            with self.subTest(workload=label):
                # Native sidecar: an init container that keeps running.
                self.assertEqual(poold.get("restartPolicy"), "Always")
                self.assertFalse([c for c in pod.get("containers", [])
                                  if is_poold(c)],
                                 "poold must not also be a regular container")
                self.assertTrue(pod.get("containers"), "no app container")
                self.assertNotRegex(poold.get("image", ""), r":latest$|^[^:]*$",
                                    "pin the poold image tag")

    def test_socket_is_in_an_emptydir_shared_with_the_app(self):
        for _, label, pod, poold in self.workloads:
            with self.subTest(workload=label):
                flags = parse_flags(poold.get("args") or [])
                socket = flags.get("unix_socket", "")
                self.assertTrue(socket.startswith("/"),
                                "poold needs --unix_socket=/absolute/path")
                volumes = {v["name"]: v for v in pod.get("volumes") or []}
                mounts = [m for m in poold.get("volumeMounts") or []
                          if socket.startswith(m["mountPath"].rstrip("/") + "/")]
                self.assertEqual(len(mounts), 1,
                                 f"no single volume mount holds {socket}")
                volume_name = mounts[0]["name"]
                relative = socket[len(mounts[0]["mountPath"].rstrip("/")) + 1:]
                self.assertFalse(mounts[0].get("readOnly", False))
                self.assertIn("emptyDir", volumes[volume_name])
                for app in pod["containers"]:
                    app_mounts = [m for m in app.get("volumeMounts") or []
                                  if m["name"] == volume_name]
                    self.assertEqual(len(app_mounts), 1,
                                     f"{app['name']} does not mount "
                                     f"{volume_name}")
                    app_socket = (app_mounts[0]["mountPath"].rstrip("/") + "/"
                                  + relative)
                    # The app is told where the socket is, as it sees it.
                    text = yaml.safe_dump({"c": app.get("command"),
                                           "a": app.get("args"),
                                           "e": app.get("env")})
                    self.assertIn(app_socket, text,
                                  f"{app['name']} never names {app_socket}")

    def test_app_may_open_the_socket(self):
        # poold creates the socket with mode 0660: the app needs poold's user
        # or its group (fsGroup or supplementalGroups: the emptyDir is then
        # group-owned by fsGroup with the setgid bit).
        for _, label, pod, poold in self.workloads:
            poold_sec = effective_security(pod, poold)
            pod_sec = pod.get("securityContext") or {}
            for app in pod["containers"]:
                with self.subTest(workload=label, container=app["name"]):
                    app_sec = effective_security(pod, app)
                    same_user = app_sec.get("runAsUser") == poold_sec.get(
                        "runAsUser")
                    groups = set(pod_sec.get("supplementalGroups") or [])
                    groups.add(app_sec.get("runAsGroup"))
                    self.assertIsNotNone(pod_sec.get("fsGroup"),
                                         "set fsGroup so the emptyDir is "
                                         "group-owned")
                    self.assertEqual(pod_sec["fsGroup"],
                                     poold_sec.get("runAsGroup"),
                                     "fsGroup should be poold's group, the "
                                     "socket's group")
                    groups.add(pod_sec["fsGroup"])
                    self.assertTrue(same_user or poold_sec.get("runAsGroup")
                                    in groups)

    def test_probes_check_poold_health_where_it_serves(self):
        for _, label, pod, poold in self.workloads:
            flags = parse_flags(poold.get("args") or [])
            socket = flags.get("unix_socket", "")
            listen = flags.get("listen", POOLD_DEFAULTS["listen"])
            for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
                with self.subTest(workload=label, probe=kind):
                    probe = poold.get(kind)
                    self.assertIsNotNone(probe, f"poold has no {kind}")
                    timeout = probe.get("timeoutSeconds", 1)
                    if "exec" in probe:
                        command = probe["exec"]["command"]
                        self.assertTrue(command[0].endswith("/poolctl"),
                                        "exec probes run poolctl")
                        self.assertEqual(command[1], "health")
                        probe_flags = parse_flags(command[2:])
                        self.assertEqual(probe_flags.get("target"),
                                         f"unix:{socket}",
                                         "probe must use poold's socket")
                        self.assertIn(probe_flags.get("service", ""),
                                      HEALTH_SERVICES)
                        # poolctl gives up before the kubelet kills it, so a
                        # failure says why in the pod's events.
                        spent = (parse_duration(
                            probe_flags.get("connect_timeout", "5s")) +
                                 parse_duration(probe_flags.get("timeout",
                                                                "30s")))
                        self.assertLess(spent, timeout)
                    elif "grpc" in probe:
                        host, _, port = listen.rpartition(":")
                        self.assertEqual(int(probe["grpc"]["port"]),
                                         int(port))
                        # The kubelet dials the pod IP, not loopback.
                        self.assertNotIn(host, ("127.0.0.1", "[::1]",
                                                "localhost"))
                        self.assertIn(probe["grpc"].get("service", ""),
                                      HEALTH_SERVICES)
                    else:
                        self.fail(f"{kind} is neither exec nor grpc")

    def test_metrics_port_is_exposed_and_annotated_for_prometheus(self):
        for _, label, pod, poold in self.workloads:
            flags = parse_flags(poold.get("args") or [])
            with self.subTest(workload=label):
                listen = flags.get("metrics_listen", "127.0.0.1:9741")
                host, _, port = listen.rpartition(":")
                # The scraper dials the pod IP, not loopback.
                self.assertNotIn(host, ("127.0.0.1", "[::1]", "localhost"),
                                 "--metrics_listen must not be loopback")
                ports = {p.get("name"): p for p in poold.get("ports") or []}
                self.assertIn("metrics", ports, "no port named metrics")
                self.assertEqual(int(ports["metrics"]["containerPort"]),
                                 int(port))
                annotations = self.pod_annotations(label)
                self.assertEqual(annotations.get("prometheus.io/scrape"),
                                 "true")
                self.assertEqual(annotations.get("prometheus.io/port"), port)
                self.assertEqual(annotations.get("prometheus.io/path"),
                                 "/metrics")

    def pod_annotations(self, label):
        """The annotations of the pods of workload `label` (kind/name)."""
        for _, doc in self.documents:
            if f"{doc.get('kind')}/{doc['metadata']['name']}" != label:
                continue
            if doc.get("kind") == "Pod":
                return doc["metadata"].get("annotations") or {}
            spec = doc.get("spec", {})
            if doc.get("kind") == "CronJob":
                spec = spec["jobTemplate"]["spec"]
            return spec["template"].get("metadata", {}).get(
                "annotations") or {}
        return {}

    def test_restricted_security_context_everywhere(self):
        for _, label, pod, _ in self.workloads:
            self.assertIs(pod.get("automountServiceAccountToken"), False,
                          "poold and the example app need no API token")
            for container in (pod.get("initContainers", []) +
                              pod.get("containers", [])):
                with self.subTest(workload=label, container=container["name"]):
                    sec = effective_security(pod, container)
                    self.assertIs(sec.get("runAsNonRoot"), True)
                    self.assertNotEqual(sec.get("runAsUser"), 0)
                    self.assertIs(sec.get("allowPrivilegeEscalation"), False)
                    self.assertIs(sec.get("readOnlyRootFilesystem"), True)
                    self.assertFalse(sec.get("privileged", False))
                    caps = sec.get("capabilities") or {}
                    self.assertIn("ALL", caps.get("drop") or [])
                    self.assertFalse(caps.get("add"))
                    self.assertEqual((sec.get("seccompProfile") or {}).get(
                        "type"), "RuntimeDefault")

    def test_memory_limit_leaves_headroom_under_the_container_limit(self):
        for _, label, _, poold in self.workloads:
            with self.subTest(workload=label):
                flags = dict(POOLD_DEFAULTS)
                flags.update(parse_flags(poold.get("args") or []))
                resources = poold.get("resources") or {}
                limit = parse_quantity(resources["limits"]["memory"])
                # Guaranteed memory: no eviction for exceeding a request.
                self.assertEqual(
                    parse_quantity(resources["requests"]["memory"]), limit)
                pools = int(flags["memory_limit_bytes"])
                self.assertGreater(pools, 0,
                                   "set --memory_limit_bytes; without it the "
                                   "container limit means OOM kills")
                max_message = int(flags["max_message_bytes"])
                self.assertGreaterEqual(max_message,
                                        int(flags["max_block_bytes"]) + 4096)
                queued = int(flags["channel_capacity"]) * max_message
                needed = pools + queued + PROCESS_HEADROOM_BYTES
                self.assertLessEqual(
                    needed, limit,
                    f"--memory_limit_bytes {pools} + queued requests {queued}"
                    f" + process {PROCESS_HEADROOM_BYTES} > limit {limit}")

    def test_grace_period_covers_poold_shutdown(self):
        for _, label, pod, poold in self.workloads:
            with self.subTest(workload=label):
                flags = dict(POOLD_DEFAULTS)
                flags.update(parse_flags(poold.get("args") or []))
                drain = parse_duration(flags["shutdown_drain"])
                grace = parse_duration(flags["shutdown_grace"])
                self.assertNotEqual(drain, float("inf"),
                                    "--shutdown_drain=inf never ends in a pod")
                period = pod.get("terminationGracePeriodSeconds", 30)
                # The app stops first; poold then needs drain + grace.
                self.assertGreaterEqual(period,
                                        drain + grace + APP_SHUTDOWN_SECONDS)

    def test_namespace_enforces_restricted_pod_security(self):
        namespaces = {doc["metadata"]["name"]: doc for _, doc in self.documents
                      if doc.get("kind") == "Namespace"}
        for file_name, doc in self.documents:
            ns = doc.get("metadata", {}).get("namespace")
            if ns is None or doc.get("kind") == "Namespace":
                continue
            with self.subTest(file=file_name, namespace=ns):
                self.assertIn(ns, namespaces)
                labels = namespaces[ns]["metadata"].get("labels", {})
                self.assertEqual(
                    labels.get("pod-security.kubernetes.io/enforce"),
                    "restricted")


class RemoteAccessTest(unittest.TestCase):
    """A poold that listens beyond loopback does it over mutual TLS, with its
    certificate from a Secret and its operators from a ConfigMap."""

    LOOPBACK = ("127.0.0.1", "[::1]", "localhost")

    @classmethod
    def setUpClass(cls):
        cls.documents = load_documents()
        cls.remote = []
        for _, label, pod in pod_specs(cls.documents):
            for c in pod.get("initContainers", []) + pod.get("containers", []):
                if not is_poold(c):
                    continue
                flags = parse_flags(c.get("args") or [])
                host = flags.get("listen", POOLD_DEFAULTS["listen"]).rpartition(
                    ":")[0]
                if host not in cls.LOOPBACK:
                    cls.remote.append((label, pod, c, flags))

    def mounted_from(self, pod, container, path):
        """The volume whose mount in `container` holds `path`."""
        volumes = {v["name"]: v for v in pod.get("volumes") or []}
        for mount in container.get("volumeMounts") or []:
            if path.startswith(mount["mountPath"].rstrip("/") + "/"):
                return volumes[mount["name"]], mount
        self.fail(f"no volume mount holds {path}")

    def config_map(self, name):
        for _, doc in self.documents:
            if doc.get("kind") == "ConfigMap" and doc["metadata"]["name"] == name:
                return doc
        self.fail(f"no ConfigMap {name}")

    def test_there_is_a_remote_variant(self):
        self.assertTrue(self.remote, "no manifest shows poold serving remote "
                        "clients (a --listen that is not loopback)")

    def test_remote_listeners_use_mutual_tls_from_a_secret(self):
        for label, pod, poold, flags in self.remote:
            with self.subTest(workload=label):
                self.assertNotIn("allow_insecure_remote", flags)
                self.assertEqual(flags.get("tls_require_client_cert"), "true")
                for flag in ("tls_cert_file", "tls_key_file",
                             "tls_client_ca_file"):
                    self.assertIn(flag, flags)
                    volume, mount = self.mounted_from(pod, poold, flags[flag])
                    self.assertIn("secret", volume, f"--{flag} is not from a "
                                  "Secret")
                    self.assertTrue(mount.get("readOnly", False))

    def test_operators_come_from_a_config_map(self):
        for label, pod, poold, flags in self.remote:
            with self.subTest(workload=label):
                self.assertIn("flagfile", flags)
                volume, mount = self.mounted_from(pod, poold, flags["flagfile"])
                self.assertIn("configMap", volume)
                key = flags["flagfile"][len(mount["mountPath"].rstrip("/")) + 1:]
                data = self.config_map(volume["configMap"]["name"])["data"]
                self.assertIn(key, data)
                file_flags = parse_flags(data[key].split())
                self.assertTrue(file_flags.get("operator_identities"))
                # Whoever may edit the ConfigMap names operators, nothing
                # else: it cannot turn TLS or the guess limit off.
                self.assertEqual(set(file_flags), {"operator_identities"})
                args = poold.get("args") or []
                self.assertTrue(args[0].startswith("--flagfile="),
                                "--flagfile must come first, so that the "
                                "flags after it win")

    def test_a_service_reaches_the_tls_port(self):
        for label, pod, poold, flags in self.remote:
            with self.subTest(workload=label):
                port = int(flags["listen"].rpartition(":")[2])
                ports = {p.get("name"): p for p in poold.get("ports") or []}
                named = [n for n, p in ports.items()
                         if int(p["containerPort"]) == port]
                self.assertTrue(named, f"port {port} is not declared")
                labels = None
                for _, doc in self.documents:
                    if f"{doc.get('kind')}/{doc['metadata']['name']}" == label:
                        labels = doc["spec"]["template"]["metadata"]["labels"]
                services = [
                    doc for _, doc in self.documents
                    if doc.get("kind") == "Service" and all(
                        labels.get(k) == v
                        for k, v in doc["spec"]["selector"].items())]
                self.assertTrue(services, "no Service selects the pods")
                # Handles belong to one process: no load balancing between
                # pods behind one virtual IP.
                for svc in services:
                    self.assertEqual(svc["spec"].get("clusterIP"), "None",
                                     "use a headless Service")
                targets = [p.get("targetPort") for svc in services
                           for p in svc["spec"]["ports"]]
                self.assertTrue(set(targets) & (set(named) | {port}))


class DockerfileTest(unittest.TestCase):
    """The Dockerfile and its agreement with the manifests."""

    @classmethod
    def setUpClass(cls):
        cls.instructions = dockerfile_instructions()
        stages = [i for i, (word, _) in enumerate(cls.instructions)
                  if word == "FROM"]
        cls.stage_count = len(stages)
        cls.final = cls.instructions[stages[-1]:]

    def final_values(self, word):
        return [arg for w, arg in self.final if w == word]

    def test_multi_stage_with_slim_runtime(self):
        self.assertGreaterEqual(self.stage_count, 2)
        self.assertEqual(self.final[0][1], "debian:bookworm-slim")

    def test_numeric_non_root_user_matching_the_manifest(self):
        users = self.final_values("USER")
        self.assertTrue(users, "no USER in the runtime stage")
        user, _, group = users[-1].partition(":")
        # Numeric, or the kubelet cannot verify runAsNonRoot.
        self.assertRegex(user, r"^[1-9][0-9]*$")
        self.assertRegex(group, r"^[1-9][0-9]*$")
        for _, label, pod in pod_specs(load_documents()):
            for c in pod.get("initContainers") or []:
                if is_poold(c):
                    sec = effective_security(pod, c)
                    self.assertEqual(sec.get("runAsUser"), int(user), label)
                    self.assertEqual(sec.get("runAsGroup"), int(group), label)

    def test_exec_form_entrypoint_and_sigterm(self):
        import json
        entrypoint = json.loads(self.final_values("ENTRYPOINT")[-1])
        self.assertEqual(entrypoint, ["/usr/local/bin/poold"])
        cmd = parse_flags(json.loads(self.final_values("CMD")[-1]))
        self.assertEqual(self.final_values("STOPSIGNAL")[-1], "SIGTERM")
        port = cmd["listen"].rpartition(":")[2]
        self.assertIn(port, " ".join(self.final_values("EXPOSE")))
        self.assertTrue(cmd["unix_socket"].startswith("/run/poold/"))


class DefragPodsScriptTest(unittest.TestCase):
    """deploy/defrag-pods.sh against a fake kubectl that logs its calls."""

    FAKE_KUBECTL = textwrap.dedent("""\
        #!/bin/bash
        # Fake kubectl: logs argv; `get` prints $FAKE_PODS; `exec` exits with
        # the code named for the pod in $FAKE_FAIL ("pod=code ...").
        printf '%s\\n' "$*" >>"$FAKE_LOG"
        case "$1" in
          get) printf '%b' "$FAKE_PODS" ;;
          exec)
            pod="$4"
            for rule in $FAKE_FAIL; do
              [[ "${rule%%=*}" == "$pod" ]] && exit "${rule#*=}"
            done
            echo "report of $pod" ;;
        esac
        """)

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.kubectl = os.path.join(self.tmp.name, "kubectl")
        with open(self.kubectl, "w", encoding="utf-8") as f:
            f.write(self.FAKE_KUBECTL)
        os.chmod(self.kubectl, stat.S_IRWXU)
        self.log = os.path.join(self.tmp.name, "log")

    def tearDown(self):
        self.tmp.cleanup()

    def run_script(self, args, pods, fail=""):
        env = dict(os.environ, KUBECTL=self.kubectl, FAKE_LOG=self.log,
                   FAKE_PODS=pods, FAKE_FAIL=fail)
        result = subprocess.run(
            [os.path.join(REPO, "deploy", "defrag-pods.sh")] + args, env=env,
            stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=30, check=False)
        calls = []
        if os.path.exists(self.log):
            with open(self.log, encoding="utf-8") as f:
                calls = f.read().splitlines()
        return result, calls

    def test_every_pod_is_attempted_and_a_failure_counts(self):
        result, calls = self.run_script(
            ["-n", "shop", "-l", "app=x", "--", "--pools=small",
             "--timeout=5m"],
            "shop a\nshop b\nshop c\n", fail="b=3")
        self.assertEqual(result.returncode, 1, result.stderr)
        self.assertIn("-n shop -l app=x --field-selector=status.phase=Running",
                      calls[0])
        execs = calls[1:]
        self.assertEqual(execs, [
            f"exec -n shop {pod} -c poold -- /usr/local/bin/poolctl defrag "
            "--target=unix:/run/poold/poold.sock --pools=small --timeout=5m"
            for pod in ("a", "b", "c")])
        self.assertIn("report of a", result.stdout)
        self.assertIn("report of c", result.stdout)
        self.assertIn("2 pods done, 1 failed: shop/b", result.stdout)

    def test_all_namespaces_analyze_and_other_socket(self):
        result, calls = self.run_script(
            ["-A", "--analyze", "-c", "pool", "-s", "/sock/p.sock"],
            "ns1 a\nns2 b\n")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("get pods -A -l poold-sidecar=true", calls[0])
        self.assertEqual(calls[1:], [
            "exec -n ns1 a -c pool -- /usr/local/bin/poolctl analyze "
            "--target=unix:/sock/p.sock",
            "exec -n ns2 b -c pool -- /usr/local/bin/poolctl analyze "
            "--target=unix:/sock/p.sock"])

    def test_no_pod_matched_is_an_error(self):
        result, calls = self.run_script([], "")
        self.assertEqual(result.returncode, 3)
        self.assertEqual(len(calls), 1)
        self.assertIn("no running pod", result.stderr)

    def test_bad_usage(self):
        result, calls = self.run_script(["--pause", "soon"], "ns a\n")
        self.assertEqual(result.returncode, 2)
        self.assertEqual(calls, [])


class PooldFlagsTest(unittest.TestCase):
    """Every flag the manifests pass poold is one this poold knows."""

    def setUp(self):
        if POOLD is None:
            self.skipTest("no --poold binary given")

    def test_manifest_flags_are_known(self):
        helpfull = subprocess.run([POOLD, "--helpfull"], capture_output=True,
                                  text=True, timeout=30, check=False)
        known = set(re.findall(r"^\s+--([a-z0-9_]+) \(",
                               helpfull.stdout + helpfull.stderr, re.M))
        self.assertIn("listen", known, "could not read poold --helpfull")
        for _, label, pod in pod_specs(load_documents()):
            for c in pod.get("initContainers", []) + pod.get("containers", []):
                if not is_poold(c):
                    continue
                flags = dict(parse_flags(c.get("args") or []))
                if "flagfile" in flags:
                    flags.update(flagfile_flags(flags["flagfile"], pod))
                for flag in flags:
                    with self.subTest(workload=label, flag=flag):
                        self.assertIn(flag, known,
                                      f"{POOLD} has no --{flag}")


def main():
    global REPO, POOLD
    argv = [sys.argv[0]]
    args = sys.argv[1:]
    while args:
        arg = args.pop(0)
        if arg == "--repo" and args:
            REPO = os.path.abspath(args.pop(0))
        elif arg == "--poold" and args:
            POOLD = os.path.abspath(args.pop(0))
        else:
            argv.append(arg)
    unittest.main(argv=argv, verbosity=2)


if __name__ == "__main__":
    main()
