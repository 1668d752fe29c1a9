// Tests of the Helm chart helm/strata, run by ctest (tests/helm/CMakeLists.txt), one check per invocation:
//
//   node chart_test.mjs lint                 helm lint --strict of every values set below
//   node chart_test.mjs schema               every rendered manifest against the Kubernetes (and Prometheus-
//                                            operator) schemas, unknown fields included; broken manifests and
//                                            broken values are refused (the negative cases)
//   node chart_test.mjs flags --scheduler BIN --kvstore BIN --worker BIN
//                                            every --flag the chart passes exists in that daemon's --help, and
//                                            every $(VAR) in a command line is an env var of its container
//   node chart_test.mjs guarantees           what the chart promises: 0.0.0.0 listeners, gRPC probes on
//                                            --health-port, grace > --drain-ms, kvstore memory = DRAM +
//                                            overhead, GPUs, /dev/shm, RDMA only when asked, security contexts
//   node chart_test.mjs networkpolicies      each daemon port admits exactly the peers that must reach it (kvstore
//                                            gRPC and UCX range: workers; scheduler gRPC: workers, kvstores; worker
//                                            gRPC: the scheduler; front door: anyone; metrics, health: metricsFrom),
//                                            on the ports the containers listen on; off renders none
//   node chart_test.mjs secrets              the generated CA, certificate, token and API keys are usable and
//                                            wired to every daemon; an existing Secret and the off switch work
//   node chart_test.mjs run --scheduler BIN --kvstore BIN --worker BIN
//                                            the chart's own command lines, certificate, token and API key run a
//                                            real cluster on loopback (the tiny Llama on the CPU), and the
//                                            `helm test` pod's script passes against its front door; every
//                                            series of the Grafana dashboard is one the daemons export
//
// Helm, kubectl and the schema packages come from deploy/node (deploy/install-deps.sh). Without them the
// test exits 77, which ctest reports as skipped, saying why. Offline: nothing talks to a cluster. Shared
// rendering: chart.mjs; the run: loopback_run.mjs.
import { X509Certificate, createPrivateKey } from "node:crypto";
import { existsSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

import {
  VARIANTS, binaries, byKind, chart, check, daemonContainers, decode, fail, failureCount, flagValue, helm, multiNode,
  nodeModules, render, valueArgs, workloads,
} from "./chart.mjs";
import { run } from "./loopback_run.mjs";

// ---- lint ------------------------------------------------------------------------------------------------

function lint() {
  for (const v of VARIANTS) {
    const r = helm(["lint", "--strict", chart, ...valueArgs(v)]);
    check(r.ok, `helm lint --strict (${v.name}):\n${r.out}${r.err}`);
  }
}

// ---- schema ----------------------------------------------------------------------------------------------

// The model class of a manifest, from the schema packages (validators generated from the Kubernetes OpenAPI
// spec and the Prometheus operator's CRDs).
async function modelOf(doc) {
  const [group, version] = doc.apiVersion.includes("/") ? doc.apiVersion.split("/") : ["", doc.apiVersion];
  const file = group === "monitoring.coreos.com"
    ? join(nodeModules, "@kubernetes-models/prometheus-operator", group, version, `${doc.kind}.js`)
    : join(nodeModules, "kubernetes-models", group, version, `${doc.kind}.js`);
  if (!existsSync(file)) throw new Error(`no schema for ${doc.apiVersion} ${doc.kind} (${file})`);
  return (await import(pathToFileURL(file).href))[doc.kind];
}

// Kubernetes' OpenAPI schemas allow unknown fields (the API server drops them, or refuses them with
// fieldValidation=Strict), so a misspelt field would pass a plain validation. A field is known when the
// schema constrains its value: replace it with a value no schema accepts (a Symbol) and the validator must
// complain at that field's path. Maps (labels, resources) are typed too, so their keys count as known.
function unknownFields(Model, doc) {
  const unknown = [];
  const probe = (node, path) => {
    if (Array.isArray(node)) {
      node.forEach((item, i) => probe(item, [...path, i]));
      return;
    }
    if (node === null || typeof node !== "object") return;
    for (const key of Object.keys(node)) {
      const keep = node[key];
      node[key] = Symbol("probe");
      const where = "/" + [...path, key].map((k) => String(k).replace(/~/g, "~0").replace(/\//g, "~1")).join("/");
      let complained = false;
      try {
        new Model(doc).validate();
      } catch (e) {
        complained = (e.errors ?? []).some((x) => x.instancePath === where || x.instancePath.startsWith(where + "/"))
          || String(e.message).includes(`data${where}`);
      }
      node[key] = keep;
      if (!complained) unknown.push(where);
      else probe(keep, [...path, key]);
    }
  };
  probe(doc, []);
  return unknown;
}

// Null when the manifest is valid, else what is wrong.
async function validate(doc) {
  const Model = await modelOf(doc);
  try {
    new Model(structuredClone(doc)).validate();
  } catch (e) {
    return e.message;
  }
  const unknown = unknownFields(Model, structuredClone(doc));
  return unknown.length ? `unknown fields ${unknown.join(", ")}` : null;
}

async function schema() {
  const kinds = new Set();
  for (const v of VARIANTS) {
    for (const doc of render(v)) {
      kinds.add(`${doc.apiVersion} ${doc.kind}`);
      const error = await validate(doc);
      check(error === null, `(${v.name}) ${doc.kind} ${doc.metadata?.name}: ${error}`);
    }
  }
  console.log(`validated: ${[...kinds].sort().join(", ")}`);
  for (const k of ["apps/v1 Deployment", "apps/v1 StatefulSet", "v1 Service", "v1 Secret", "policy/v1 PodDisruptionBudget",
                   "networking.k8s.io/v1 Ingress", "networking.k8s.io/v1 NetworkPolicy", "monitoring.coreos.com/v1 ServiceMonitor", "v1 Pod"]) {
    check(kinds.has(k), `no ${k} rendered by any values set: its validation was never exercised`);
  }

  // Negative cases: the validator refuses a misspelt field and a wrong type in a real rendered manifest.
  const docs = render(VARIANTS[2]);
  const worker = workloads(docs).find((w) => w.metadata.name.endsWith("-worker"));
  const broken = [
    ["a misspelt container field", (d) => { d.spec.template.spec.containers[0].imagePulPolicy = "Always"; }, /imagePulPolicy/],
    ["a misspelt probe field", (d) => { d.spec.template.spec.containers[0].readinessProbe.grpc.prot = 1; }, /prot/],
    ["a string replica count", (d) => { d.spec.replicas = "two"; }, /replicas/],
    ["a volume without a source type", (d) => { d.spec.template.spec.volumes[0].emptyDir = "yes"; }, /emptyDir/],
  ];
  for (const [what, mutate, mentions] of broken) {
    const d = structuredClone(worker);
    mutate(d);
    const error = await validate(d);
    check(error !== null && mentions.test(error), `the worker Deployment with ${what} was not refused as such: ${error}`);
  }
  const monitor = byKind(docs, "ServiceMonitor")[0];
  const m = structuredClone(monitor);
  m.spec.endpoints[0].intervall = "15s";
  check(/intervall/.test(await validate(m) ?? ""), "a ServiceMonitor with a misspelt endpoint field was not refused");

  // values.schema.json refuses bad values.
  for (const set of ["kvstore.dramBytes=lots", "worker.gpuz=1", "model.source=s3", "scheduler.policy=random",
                     "ucx.extraEnv.TLS=rc", "kvstore.ssd.io=mmap", "model.source=initContainer",
                     "ucx.extraEnv.UCX_TCP_PORT_RANGE=1-2", "kvstore.ports.ucx.first=0", "networkPolicy.enabled=yes",
                     "networkPolicy.metricsFrom[0].podSelecter.app=x"]) {
    const r = helm(["template", "strata", chart, "--set", set]);
    check(!r.ok && /schema/.test(r.err), `values ${set} were not refused by values.schema.json: ${r.err.trim()}`);
  }
}

// ---- flags -----------------------------------------------------------------------------------------------

function helpFlags(binary, sub) {
  const r = spawnSync(binary, [...sub, "--help"], { encoding: "utf8", timeout: 20000 });
  if (r.status !== 0) throw new Error(`${binary} ${sub.join(" ")} --help exited ${r.status}: ${r.stderr}`);
  return new Set([...r.stdout.matchAll(/(?:^|[\s,])(--[a-z0-9][a-z0-9-]*)/gm)].map((m) => m[1]));
}

function flags(argv) {
  const bins = binaries(argv);
  const help = {
    scheduler: helpFlags(bins.scheduler, ["serve"]),
    kvstore: helpFlags(bins.kvstore, []),
    worker: helpFlags(bins.worker, []),
  };
  // The help was read: each daemon lists a flag of its own, and not one that exists nowhere.
  for (const [daemon, own] of [["scheduler", "--policy"], ["kvstore", "--dram-bytes"], ["worker", "--max-running-requests"]]) {
    check(help[daemon].has(own) && !help[daemon].has("--no-such-flag"), `${daemon} --help was not parsed: ${[...help[daemon]]}`);
  }
  let checked = 0;
  for (const v of VARIANTS) {
    const seen = new Set();
    for (const { daemon, c } of daemonContainers(render(v))) {
      seen.add(daemon);
      const args = c.args ?? [];
      if (daemon === "scheduler") check(args[0] === "serve", `(${v.name}) the scheduler runs "${args[0]}", not serve`);
      for (const a of args.filter((x) => x.startsWith("--"))) {
        const flag = a.split("=")[0];
        checked++;
        check(help[daemon].has(flag), `(${v.name}) ${daemon} is passed ${flag}, which \`${bins[daemon]}${daemon === "scheduler" ? " serve" : ""} --help\` does not list`);
      }
      // Kubernetes leaves an undefined $(VAR) as it is, so a typo would reach the daemon as text.
      const env = new Set((c.env ?? []).map((e) => e.name));
      for (const a of args) {
        for (const [, name] of a.matchAll(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g)) {
          check(env.has(name), `(${v.name}) ${daemon} argument ${a} names $(${name}), not an env var of its container`);
        }
      }
    }
    check(seen.size === 3, `(${v.name}) rendered daemons: ${[...seen]}; want scheduler, kvstore and worker`);
  }
  console.log(`checked ${checked} flag uses over ${VARIANTS.length} values sets`);
}


// ---- guarantees ------------------------------------------------------------------------------------------

const bytesOf = (q) => {
  const m = /^([0-9.]+)(Ki|Mi|Gi|Ti|k|M|G|T)?$/.exec(String(q));
  const mult = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, k: 1e3, M: 1e6, G: 1e9, T: 1e12 };
  return m ? Number(m[1]) * (m[2] ? mult[m[2]] : 1) : NaN;
};

function guarantees() {
  for (const v of VARIANTS) {
    const docs = render(v);
    const rdma = v.files.includes(multiNode);
    const tag = `(${v.name})`;
    for (const { daemon, workload, pod, c } of daemonContainers(docs)) {
      const where = `${tag} ${daemon}`;
      // Listens on every interface (the daemons' defaults are loopback).
      const listens = { scheduler: ["--grpc-address", "--metrics-host", "--http-host"], kvstore: ["--host"],
                        worker: ["--grpc-address", "--metrics-host"] }[daemon];
      for (const f of listens) check(/^0\.0\.0\.0(:|$)/.test(flagValue(c, f) ?? ""), `${where} ${f} is ${flagValue(c, f)}, not 0.0.0.0`);
      // ... except UCX: on the pod's interface only (on TCP an rkey enforces nothing).
      if (daemon === "kvstore") check(flagValue(c, "--ucx-host") === "$(POD_IP)", `${where} --ucx-host is ${flagValue(c, "--ucx-host")}, not $(POD_IP)`);
      // Probes: kubelet's gRPC probes on the daemon's --health-port.
      const health = Number(flagValue(c, "--health-port"));
      check(health > 0, `${where} has no --health-port`);
      for (const p of ["startupProbe", "readinessProbe", "livenessProbe"]) {
        check(c[p]?.grpc?.port === health, `${where} ${p} is not a gRPC probe on --health-port ${health}: ${JSON.stringify(c[p])}`);
      }
      // Graceful termination outlasts the drain.
      const drain = flagValue(c, "--drain-ms");
      if (drain !== undefined) {
        check(pod.terminationGracePeriodSeconds * 1000 > Number(drain),
              `${where} terminationGracePeriodSeconds ${pod.terminationGracePeriodSeconds} is not longer than --drain-ms ${drain}`);
      }
      // Security: non-root, no privilege escalation, read-only root, every capability dropped; IPC_LOCK (and
      // the RDMA device) only where RDMA is asked for, and only on the data plane.
      const sc = c.securityContext;
      check(pod.securityContext?.runAsNonRoot === true, `${where} pod may run as root`);
      check(sc?.allowPrivilegeEscalation === false && sc?.readOnlyRootFilesystem === true && sc?.capabilities?.drop?.includes("ALL"),
            `${where} container securityContext too loose: ${JSON.stringify(sc)}`);
      check(!sc.privileged, `${where} is privileged`);
      const added = sc.capabilities.add ?? [];
      const wantLock = rdma && daemon !== "scheduler";
      check(JSON.stringify(added) === JSON.stringify(wantLock ? ["IPC_LOCK"] : []), `${where} adds capabilities ${added}; want ${wantLock ? "IPC_LOCK" : "none"}`);
      const rdmaRequest = Object.keys(c.resources?.limits ?? {}).some((k) => k.startsWith("rdma/"));
      check(rdmaRequest === wantLock, `${where} RDMA device request is ${rdmaRequest}; want ${wantLock}`);
      // UCX_TCP_PORT_RANGE (kvstores, always) pins the UCX listener that the NetworkPolicy opens.
      const ucxEnv = (c.env ?? []).filter((e) => e.name.startsWith("UCX_") && !(daemon === "kvstore" && e.name === "UCX_TCP_PORT_RANGE"));
      check(rdma ? ucxEnv.some((e) => e.name === "UCX_TLS") || daemon === "scheduler" : ucxEnv.length === 0,
            `${where} UCX environment does not follow the values: ${JSON.stringify(c.env)}`);
      check((daemon === "kvstore") === (c.env ?? []).some((e) => e.name === "UCX_TCP_PORT_RANGE"),
            `${where} UCX_TCP_PORT_RANGE is ${daemon === "kvstore" ? "missing" : "set"}`);
      check(pod.automountServiceAccountToken === false && pod.serviceAccountName.endsWith(`-${daemon}`),
            `${where} does not run under its own service account without an API token`);
      // Prometheus scrape annotations point at the metrics port.
      const ann = workload.spec.template.metadata.annotations ?? {};
      check(ann["prometheus.io/scrape"] === "true" && Number(ann["prometheus.io/port"]) === Number(flagValue(c, "--metrics-port")),
            `${where} scrape annotations ${JSON.stringify(ann)} do not name --metrics-port`);
      // Peers register with every scheduler replica, by its stable DNS name (no single point of failure).
      const schedulerReplicas = workloads(docs).find((w) => w.metadata.name === "strata-scheduler").spec.replicas;
      if (daemon !== "scheduler") {
        const schedulers = c.args.filter((_, i) => c.args[i - 1] === "--scheduler");
        check(schedulers.length === schedulerReplicas && schedulers.every((a, i) => a === `strata-scheduler-${i}.strata-scheduler-replicas.llm.svc.cluster.local:50070`),
              `${where} --scheduler list ${schedulers} is not the ${schedulerReplicas} scheduler replicas' DNS names`);
      } else {
        check(workload.kind === "StatefulSet" && workload.spec.serviceName === "strata-scheduler-replicas" && schedulerReplicas >= 2,
              `${where} is not a StatefulSet of at least two replicas behind the headless strata-scheduler-replicas: ${workload.kind} ${schedulerReplicas}`);
      }
      if (daemon === "kvstore") {
        const memory = bytesOf(c.resources.requests.memory);
        check(c.resources.requests.memory === c.resources.limits.memory, `${where} memory request != limit`);
        check(memory > Number(flagValue(c, "--dram-bytes")), `${where} memory ${memory} does not cover --dram-bytes ${flagValue(c, "--dram-bytes")}`);
        check(workload.kind === "StatefulSet" && workload.spec.volumeClaimTemplates?.[0]?.metadata.name === "ssd", `${where} has no SSD PVC`);
        check(c.volumeMounts.some((m) => m.name === "ssd" && flagValue(c, "--ssd-dir").startsWith(m.mountPath + "/")), `${where} --ssd-dir is not on the PVC`);
        check(Number(flagValue(c, "--max-client-bytes")) === Math.floor(Number(flagValue(c, "--dram-bytes")) / 2),
              `${where} --max-client-bytes ${flagValue(c, "--max-client-bytes")} is not half of --dram-bytes`);
        // A real SSD capacity below the volume (0 never evicts, and a full volume fails every write-back):
        // by default 80% of the PVC, or what the values set.
        const pvcBytes = bytesOf(workload.spec.volumeClaimTemplates[0].spec.resources.requests.storage);
        const ssdBytes = Number(flagValue(c, "--ssd-bytes"));
        check(ssdBytes > 0 && ssdBytes < pvcBytes, `${where} --ssd-bytes ${ssdBytes} is no capacity within its ${pvcBytes}-byte volume`);
        check(v.files.length > 0 || ssdBytes === Math.floor(0.8 * pvcBytes),
              `${where} --ssd-bytes ${ssdBytes} is not 80% of its ${pvcBytes}-byte volume by default`);
        check(/^\$\(POD_NAME\)\.strata-kvstore\.\$\(POD_NAMESPACE\)\.svc\.cluster\.local:7480$/.test(flagValue(c, "--advertise-address")),
              `${where} does not advertise its stable DNS name: ${flagValue(c, "--advertise-address")}`);
        // Per-grant rkeys: a worker's rkey reaches its granted blocks only, until its put or lease ends (RDMA).
        check(flagValue(c, "--rkey-scope") === "grant", `${where} --rkey-scope is ${flagValue(c, "--rkey-scope")}, not grant`);
      }
      if (daemon === "worker") {
        check(Number(c.resources.limits["nvidia.com/gpu"]) >= 1 && flagValue(c, "--backend") === "cuda", `${where} does not ask for a GPU and --backend cuda`);
        const shm = pod.volumes.find((vol) => vol.name === "dshm");
        check(shm?.emptyDir?.medium === "Memory" && bytesOf(shm.emptyDir.sizeLimit) > 0 && c.volumeMounts.some((m) => m.name === "dshm" && m.mountPath === "/dev/shm"),
              `${where} has no memory-backed /dev/shm of a set size`);
        const replicas = workloads(docs).find((w) => w.metadata.name === "strata-kvstore").spec.replicas;
        const kvstores = c.args.filter((_, i) => c.args[i - 1] === "--kvstore");
        check(kvstores.length === replicas && kvstores.every((a, i) => a === `strata-kvstore-${i}.strata-kvstore.llm.svc.cluster.local:7480`),
              `${where} --kvstore list ${kvstores} is not the ${replicas} kvstores' DNS names`);
        check(c.volumeMounts.some((m) => m.name === "model" && m.readOnly) && flagValue(c, "--model").startsWith("/models/"), `${where} does not read the model from /models`);
      }
    }
    check(byKind(docs, "PodDisruptionBudget").some((p) => p.metadata.name === "strata-kvstore"), `${tag} no kvstore PodDisruptionBudget`);
    const schedulerPdb = byKind(docs, "PodDisruptionBudget").find((p) => p.metadata.name === "strata-scheduler");
    check(schedulerPdb?.spec.maxUnavailable === 1 && schedulerPdb.spec.selector.matchLabels["app.kubernetes.io/component"] === "scheduler",
          `${tag} no scheduler PodDisruptionBudget that keeps all replicas but one: ${JSON.stringify(schedulerPdb?.spec)}`);
    check(byKind(docs, "Service").some((s) => s.metadata.name === "strata-scheduler-replicas" && s.spec.clusterIP === "None"), `${tag} no headless scheduler Service`);
    check(byKind(docs, "Service").some((s) => s.metadata.name === "strata-kvstore" && s.spec.clusterIP === "None"), `${tag} no headless kvstore Service`);
    check(byKind(docs, "ConfigMap").some((m) => JSON.parse(m.data["strata.json"]).panels.length > 0), `${tag} no Grafana dashboard`);
  }
}

// ---- networkpolicies -------------------------------------------------------------------------------------

// Does a LabelSelector select these labels? ({} selects everything.)
function selects(sel, labels) {
  for (const [k, v] of Object.entries(sel.matchLabels ?? {})) if (labels[k] !== v) return false;
  for (const e of sel.matchExpressions ?? []) {
    const has = e.key in labels;
    const ok = { In: has && e.values.includes(labels[e.key]), NotIn: !has || !e.values.includes(labels[e.key]),
                 Exists: has, DoesNotExist: !has }[e.operator];
    if (!ok) return false;
  }
  return true;
}

// Kubernetes' ingress semantics: do the namespace's policies admit a TCP connection from `source` to `port` of
// a pod with `labels` in namespace llm? A source is a pod {ns, labels} or anything else {ip}.
function admits(policies, labels, source, port) {
  const applying = policies.filter((p) => selects(p.spec.podSelector, labels) && (p.spec.policyTypes ?? ["Ingress"]).includes("Ingress"));
  if (applying.length === 0) return true;  // a pod no policy selects is not isolated
  const peerMatches = (peer) => {
    if (peer.ipBlock) throw new Error("ipBlock peers: not modelled by this test");
    if (!source.labels) return false;  // pod and namespace selectors match pods only
    const inNs = peer.namespaceSelector ? selects(peer.namespaceSelector, { "kubernetes.io/metadata.name": source.ns }) : source.ns === "llm";
    return inNs && (!peer.podSelector || selects(peer.podSelector, source.labels));
  };
  const portMatches = (p) => {
    if ((p.protocol ?? "TCP") !== "TCP") return false;
    if (p.port === undefined) return true;
    if (typeof p.port !== "number") throw new Error(`named port ${p.port}: the policies give numbers`);
    return port >= p.port && port <= (p.endPort ?? p.port);
  };
  return applying.some((p) => (p.spec.ingress ?? []).some((rule) =>
    (!rule.from?.length || rule.from.some(peerMatches)) && (!rule.ports?.length || rule.ports.some(portMatches))));
}

// The ports a daemon's container listens on, from its flags and environment: {role: port} ({ucx: [first, last]}).
function listeningPorts(daemon, c) {
  const ports = { metrics: Number(flagValue(c, "--metrics-port")), health: Number(flagValue(c, "--health-port")) };
  if (daemon === "kvstore") {
    ports.grpc = Number(flagValue(c, "--port"));
    const m = /^(\d+)-(\d+)$/.exec((c.env ?? []).find((e) => e.name === "UCX_TCP_PORT_RANGE")?.value ?? "");
    if (m) ports.ucx = [Number(m[1]), Number(m[2])];
  } else {
    ports.grpc = Number(String(flagValue(c, "--grpc-address")).split(":").pop());
  }
  if (daemon === "scheduler") ports.http = Number(flagValue(c, "--http-port"));
  return ports;
}

// Who must reach each port (from the daemons' code: workers call the scheduler and the kvstores, gRPC and
// UCX; kvstores call the scheduler; the scheduler's front door calls workers); metrics and health: `metrics`.
const MUST_REACH = { kvstore: { grpc: ["worker"], ucx: ["worker"] }, scheduler: { grpc: ["worker", "kvstore"], http: "anyone" },
                     worker: { grpc: ["scheduler"] } };
const METRICS_FROM = {
  "any pod": (s) => !!s.labels,
  namespace: (s) => !!s.labels && s.ns === "llm",
  monitoring: (s) => !!s.labels && (s.ns === "llm" || s.prometheus === true),
};

// What is wrong with the rendered chart's NetworkPolicies (empty: nothing). metrics: a key of METRICS_FROM.
function policyProblems(docs, metrics) {
  const problems = [];
  const policies = byKind(docs, "NetworkPolicy");
  const names = policies.map((p) => p.metadata.name).sort();
  if (JSON.stringify(names) !== JSON.stringify(["strata-kvstore", "strata-scheduler", "strata-worker"])) problems.push(`NetworkPolicies ${names}; want one per component`);
  for (const p of policies) {
    if (!(p.spec.policyTypes ?? []).includes("Ingress")) problems.push(`${p.metadata.name} does not isolate ingress`);
    (p.spec.ingress ?? []).forEach((rule, i) => { if (!rule.ports?.length) problems.push(`${p.metadata.name} ingress rule ${i} opens every port`); });
  }
  const daemons = daemonContainers(docs);
  const test = byKind(docs, "Pod")[0];
  const sources = [
    ...daemons.map(({ daemon, workload }) => ({ name: daemon, component: daemon, ns: "llm", labels: workload.spec.template.metadata.labels })),
    { name: "the helm test pod", ns: "llm", labels: test.metadata.labels },
    { name: "another pod of the namespace", ns: "llm", labels: { app: "other" } },
    { name: "Prometheus in namespace monitoring", ns: "monitoring", labels: { "app.kubernetes.io/name": "prometheus" }, prometheus: true },
    { name: "a pod of namespace default", ns: "default", labels: { app: "other" } },
    { name: "a client outside the cluster", ip: "203.0.113.7" },
  ];
  for (const { daemon, workload, c } of daemons) {
    const labels = workload.spec.template.metadata.labels;
    const listens = listeningPorts(daemon, c);
    if (daemon === "kvstore" && !listens.ucx) problems.push("the kvstore has no UCX_TCP_PORT_RANGE: its UCX listener takes any port");
    // Each policy selects its own component's pods only.
    for (const p of policies) {
      if (selects(p.spec.podSelector, labels) !== (p.metadata.name === `strata-${daemon}`)) problems.push(`${p.metadata.name} ${selects(p.spec.podSelector, labels) ? "selects" : "misses"} the ${daemon} pods`);
    }
    if (selects(policies.find((p) => p.metadata.name === "strata-kvstore")?.spec.podSelector ?? { matchLabels: { none: "" } }, test.metadata.labels)) problems.push("a policy selects the helm test pod");
    // Each listening port admits exactly the sources that must reach it.
    for (const [role, port] of Object.entries(listens)) {
      const must = MUST_REACH[daemon][role];
      const want = (s) => (role === "metrics" || role === "health" ? METRICS_FROM[metrics](s) : must === "anyone" || must.includes(s.component));
      const probes = Array.isArray(port) ? [port[0], Math.floor((port[0] + port[1]) / 2), port[1]] : [port];
      for (const n of probes) {
        for (const s of sources) {
          const got = admits(policies, labels, s, n);
          if (got !== want(s)) problems.push(`${daemon} ${role} port ${n}: ${s.name} is ${got ? "admitted" : "refused"}`);
        }
      }
    }
    // Every port a policy opens on these pods is one the container listens on (the UCX range as a whole).
    const open = new Set(Object.values(listens).map((p) => (Array.isArray(p) ? `${p[0]}-${p[1]}` : `${p}-${p}`)));
    for (const p of policies.filter((x) => selects(x.spec.podSelector, labels))) {
      for (const rule of p.spec.ingress ?? []) {
        for (const q of rule.ports ?? []) {
          if (!open.has(`${q.port}-${q.endPort ?? q.port}`)) problems.push(`${p.metadata.name} opens ${q.port}-${q.endPort ?? q.port}, not a port the ${daemon} listens on (${[...open]})`);
        }
      }
    }
    // Nothing just outside the UCX range.
    if (Array.isArray(listens.ucx)) {
      for (const n of [listens.ucx[0] - 1, listens.ucx[1] + 1].filter((x) => !Object.values(listens).includes(x))) {
        if (sources.some((s) => admits(policies, labels, s, n))) problems.push(`kvstore port ${n}, outside the UCX range, admits someone`);
      }
    }
  }
  return problems;
}

function networkpolicies() {
  const dir = mkdtempSync(join(tmpdir(), "strata-np-"));
  const file = (name, text) => { writeFileSync(join(dir, name), text); return join(dir, name); };
  const nsOnly = file("ns-only.yaml", "networkPolicy:\n  metricsFrom: []\n");
  const prometheus = file("prometheus.yaml", [
    "networkPolicy:", "  metricsFrom:",
    "    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}",
    "      podSelector: {matchLabels: {app.kubernetes.io/name: prometheus}}", ""].join("\n"));
  const moved = ["kvstore.ports.grpc=9100", "kvstore.ports.ucx.first=9200", "kvstore.ports.ucx.last=9203", "scheduler.ports.grpc=9300",
                 "worker.ports.grpc=9400", "frontDoor.httpPort=8080", "kvstore.ports.metrics=9101", "worker.ports.health=9401"];
  const variants = [
    ...VARIANTS.map((v) => ({ ...v, metrics: "any pod" })),
    { name: "metrics from the namespace only, ports moved", files: [nsOnly], set: moved, metrics: "namespace" },
    { name: "metrics from Prometheus's namespace, a one-port UCX range", files: [prometheus], set: ["kvstore.ports.ucx.last=7490"], metrics: "monitoring" },
  ];
  let policies = 0;
  for (const v of variants) {
    const docs = render(v);
    policies += byKind(docs, "NetworkPolicy").length;
    for (const p of policyProblems(docs, v.metrics)) fail(`(${v.name}) ${p}`);
  }
  check(policies === 3 * variants.length, `${policies} NetworkPolicies over ${variants.length} values sets`);

  // Off: no policy; the UCX range stays pinned.
  const off = render({ name: "network policies off", files: [], set: ["networkPolicy.enabled=false"] });
  check(byKind(off, "NetworkPolicy").length === 0, "networkPolicy.enabled=false still renders NetworkPolicies");
  const kv = daemonContainers(off).find((x) => x.daemon === "kvstore");
  check(listeningPorts("kvstore", kv.c).ucx?.join("-") === "7490-7499", "networkPolicy.enabled=false drops UCX_TCP_PORT_RANGE");
  const r = helm(["template", "strata", chart, "--set", "kvstore.ports.ucx.first=7499", "--set", "kvstore.ports.ucx.last=7490"]);
  check(!r.ok && /last is below first/.test(r.err), `a UCX range whose last is below its first was not refused: ${r.err.trim()}`);

  // The check can fail: each broken chart below must be reported as such.
  const base = render(VARIANTS[0]);
  const policy = (docs, name) => docs.find((d) => d.kind === "NetworkPolicy" && d.metadata.name === name);
  const kvstoreOf = (docs) => daemonContainers(docs).find((x) => x.daemon === "kvstore").c;
  const broken = [
    ["the scheduler admitted to kvstore gRPC", (d) => { policy(d, "strata-kvstore").spec.ingress[0].from.push({ podSelector: { matchLabels: { "app.kubernetes.io/component": "scheduler" } } }); },
     /kvstore grpc port 7480: scheduler is admitted/],
    ["the UCX range one port too long", (d) => { policy(d, "strata-kvstore").spec.ingress[0].ports[1].endPort = 7500; }, /opens 7490-7500, not a port the kvstore listens on/],
    ["a kvstore rule without ports", (d) => { delete policy(d, "strata-kvstore").spec.ingress[0].ports; }, /strata-kvstore ingress rule 0 opens every port/],
    ["a kvstore listening on another gRPC port", (d) => { const c = kvstoreOf(d); c.args[c.args.indexOf("--port") + 1] = "7483"; }, /kvstore grpc port 7483: worker is refused/],
    ["a kvstore without UCX_TCP_PORT_RANGE", (d) => { const c = kvstoreOf(d); c.env = c.env.filter((e) => e.name !== "UCX_TCP_PORT_RANGE"); }, /no UCX_TCP_PORT_RANGE/],
    ["worker metrics open to the world", (d) => { delete policy(d, "strata-worker").spec.ingress[1].from; }, /worker metrics port 9480: a client outside the cluster is admitted/],
    ["no worker policy", (d) => { d.splice(d.indexOf(policy(d, "strata-worker")), 1); }, /NetworkPolicies strata-kvstore,strata-scheduler; want one per component/],
    ["workers admitted to workers' gRPC", (d) => { policy(d, "strata-worker").spec.ingress[0].from[0].podSelector.matchLabels["app.kubernetes.io/component"] = "worker"; },
     /worker grpc port 50080: scheduler is refused/],
  ];
  for (const [what, mutate, mentions] of broken) {
    const d = structuredClone(base);
    mutate(d);
    const problems = policyProblems(d, "any pod");
    check(problems.some((p) => mentions.test(p)), `${what} was not reported (${mentions}): ${problems.join("; ") || "no problem found"}`);
  }
  console.log(`checked ${policies} NetworkPolicies over ${variants.length} values sets, the off switch and ${broken.length} broken charts`);
}

// ---- secrets ---------------------------------------------------------------------------------------------

const EKU = { serverAuth: "1.3.6.1.5.5.7.3.1", clientAuth: "1.3.6.1.5.5.7.3.2" };

function secrets() {
  // Generated: a CA and a certificate per role (worker, kvstore, scheduler) it signed, each with CN
  // strata-<role> and SAN strata.internal, usable as server and client, whose key matches; a long random
  // token; one API key for tenant `default`.
  const docs = render(VARIANTS[0]);
  const internal = byKind(docs, "Secret").find((s) => s.metadata.name === "strata-internal");
  if (check(internal, "no generated internal Secret with the default values")) {
    const ca = new X509Certificate(decode(internal, "ca.crt"));
    check(ca.ca, "ca.crt is not a CA certificate");
    check(!("tls.crt" in internal.data), "the internal Secret still holds one certificate for every role");
    for (const role of ["worker", "kvstore", "scheduler"]) {
      const cert = new X509Certificate(decode(internal, `${role}.crt`));
      check(cert.verify(ca.publicKey) && cert.checkIssued(ca), `${role}.crt is not signed by ca.crt`);
      check(cert.subject === `CN=strata-${role}`, `${role}.crt's subject is ${cert.subject}, not CN=strata-${role}`);
      check(cert.checkHost("strata.internal") === "strata.internal", `${role}.crt does not name strata.internal: ${cert.subjectAltName}`);
      check(cert.checkPrivateKey(createPrivateKey(decode(internal, `${role}.key`))), `${role}.key is not the key of ${role}.crt`);
      check(EKU.serverAuth && cert.keyUsage?.includes(EKU.serverAuth) && cert.keyUsage?.includes(EKU.clientAuth),
            `${role}.crt is not usable for both mutual-TLS ends: extended key usage ${cert.keyUsage}`);
    }
    check(decode(internal, "token").length >= 32, "the generated token is shorter than 32 characters");
  }
  const keys = byKind(docs, "Secret").find((s) => s.metadata.name === "strata-api-keys");
  if (check(keys, "no generated API-key Secret with the default values")) {
    const key = decode(keys, "api-key");
    check(/^sk-strata-[A-Za-z0-9]{40}$/.test(key), `generated API key ${key} is not sk-strata-<40 random>`);
    check(decode(keys, "api-keys") === `${key} default\n`, "the --api-keys file does not hold the API key for tenant default");
  }
  // Two installs get different secrets (nothing is a constant baked into the chart).
  const again = byKind(render(VARIANTS[0]), "Secret").find((s) => s.metadata.name === "strata-internal");
  check(again && decode(again, "token") !== decode(internal, "token") && decode(again, "ca.crt") !== decode(internal, "ca.crt"),
        "two renders produced the same token or CA");

  // Wiring, for each values set: each daemon's security flags name files of the Secret it mounts.
  for (const v of VARIANTS) {
    const tag = `(${v.name})`;
    const rendered = render(v);
    const secretsByName = Object.fromEntries(byKind(rendered, "Secret").map((s) => [s.metadata.name, s]));
    const existing = v.set.includes("internalSecurity.existingSecret=my-internal");
    const off = v.set.includes("internalSecurity.tls.enabled=false");
    const tokenOff = v.set.includes("internalSecurity.token.enabled=false");
    for (const { daemon, pod, c } of daemonContainers(rendered)) {
      const where = `${tag} ${daemon}`;
      const files = ["--tls-cert", "--tls-key", "--tls-ca", "--auth-token-file"].map((f) => [f, flagValue(c, f)]).filter(([, x]) => x);
      const want = [...(off ? [] : ["--tls-cert", "--tls-key", "--tls-ca"]), ...(tokenOff ? [] : ["--auth-token-file"])];
      check(JSON.stringify(files.map(([f]) => f)) === JSON.stringify(want), `${where} passes ${files.map(([f]) => f)}; want ${want}`);
      check((flagValue(c, "--tls-server-name") === "strata.internal") === !off, `${where} --tls-server-name is ${flagValue(c, "--tls-server-name")}`);
      if (want.length === 0) {
        check(!pod.volumes.some((vol) => vol.name === "internal-security"), `${where} mounts the internal Secret with security off`);
        continue;
      }
      const mount = c.volumeMounts.find((m) => m.name === "internal-security");
      const volume = pod.volumes.find((vol) => vol.name === "internal-security");
      const name = volume?.secret?.secretName;
      check(name === (existing ? "my-internal" : "strata-internal"), `${where} mounts Secret ${name}`);
      // Each file is an item of the mounted Secret; the certificate and key are the daemon's own role's.
      for (const [flag, path] of files) {
        const file = path.slice((mount?.mountPath ?? "").length + 1);
        const key = volume?.secret?.items?.find((item) => item.path === file)?.key;
        check(path.startsWith(mount.mountPath + "/") && key && (existing || key in secretsByName[name].data),
              `${where} ${flag} ${path} is not a key of the mounted Secret ${name}`);
        if (flag === "--tls-cert" || flag === "--tls-key") {
          check(key === `${daemon}.${flag === "--tls-cert" ? "crt" : "key"}`, `${where} ${flag} is Secret key ${key}, not its role's`);
        }
      }
      check((flagValue(c, "--writer-identity") === "strata-worker") === (daemon === "kvstore" && !off),
            `${where} --writer-identity is ${flagValue(c, "--writer-identity")}`);
    }
    check(!existing || !secretsByName["strata-internal"], `${tag} generates an internal Secret although one is given`);
    // The workers' KV MAC secret: in worker pods (the file --kv-mac-key-file names), in no other pod.
    for (const { daemon, pod, c } of daemonContainers(rendered)) {
      const volume = pod.volumes.find((vol) => vol.secret?.secretName === "strata-kv-mac");
      const flag = flagValue(c, "--kv-mac-key-file");
      if (daemon !== "worker") {
        check(!volume && flag === undefined, `${tag} ${daemon} mounts or names the workers' KV MAC secret`);
        continue;
      }
      const mount = c.volumeMounts.find((m) => m.name === volume?.name);
      check(mount && flag === `${mount.mountPath}/kv-mac.key`, `${tag} worker --kv-mac-key-file ${flag} is not the mounted kv-mac Secret's key`);
      const secret = secretsByName["strata-kv-mac"];
      check(secret && decode(secret, "kv-mac.key").length >= 32, `${tag} no generated kv-mac Secret of at least 32 bytes`);
    }
    const scheduler = daemonContainers(rendered).find((x) => x.daemon === "scheduler");
    const keysOff = v.set.includes("frontDoor.apiKeys.enabled=false");
    check((flagValue(scheduler.c, "--api-keys") !== undefined) === !keysOff, `${tag} --api-keys does not follow frontDoor.apiKeys.enabled`);
    const test = byKind(rendered, "Pod")[0];
    const apiKeyEnv = test.spec.containers[0].env.find((e) => e.name === "API_KEY");
    check(keysOff ? !apiKeyEnv : apiKeyEnv?.valueFrom.secretKeyRef.name === (v.set.includes("frontDoor.apiKeys.existingSecret=my-keys") ? "my-keys" : "strata-api-keys"),
          `${tag} the helm test pod does not take the API key from the chart's Secret`);
  }
}

// ---- main ------------------------------------------------------------------------------------------------

const [command, ...rest] = process.argv.slice(2);
const commands = { lint, schema, flags: () => flags(rest), guarantees, networkpolicies, secrets, run: () => run(rest) };
if (!commands[command]) {
  console.log(`usage: node chart_test.mjs ${Object.keys(commands).join("|")} [...]`);
  process.exit(2);
}
const started = Date.now();
try {
  await commands[command]();
} catch (e) {
  fail(`${command}: ${e.stack ?? e}`);
}
console.log(`chart_test ${command}: ${failureCount() === 0 ? "PASS" : `${failureCount()} FAILED`} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
process.exit(failureCount() === 0 ? 0 : 1);
