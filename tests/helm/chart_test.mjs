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
import { existsSync } from "node:fs";
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
                   "networking.k8s.io/v1 Ingress", "monitoring.coreos.com/v1 ServiceMonitor", "v1 Pod"]) {
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
                     "ucx.extraEnv.TLS=rc", "kvstore.ssd.io=mmap", "model.source=initContainer"]) {
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
      check(rdma ? (c.env ?? []).some((e) => e.name === "UCX_TLS") || daemon === "scheduler" : !(c.env ?? []).some((e) => e.name.startsWith("UCX_")),
            `${where} UCX environment does not follow the values: ${JSON.stringify(c.env)}`);
      check(pod.automountServiceAccountToken === false && pod.serviceAccountName.endsWith(`-${daemon}`),
            `${where} does not run under its own service account without an API token`);
      // Prometheus scrape annotations point at the metrics port.
      const ann = workload.spec.template.metadata.annotations ?? {};
      check(ann["prometheus.io/scrape"] === "true" && Number(ann["prometheus.io/port"]) === Number(flagValue(c, "--metrics-port")),
            `${where} scrape annotations ${JSON.stringify(ann)} do not name --metrics-port`);
      // Peers find the scheduler by its Service's DNS name.
      if (daemon !== "scheduler") {
        check(flagValue(c, "--scheduler") === "strata-scheduler.llm.svc.cluster.local:50070", `${where} --scheduler is ${flagValue(c, "--scheduler")}`);
      }
      if (daemon === "kvstore") {
        const memory = bytesOf(c.resources.requests.memory);
        check(c.resources.requests.memory === c.resources.limits.memory, `${where} memory request != limit`);
        check(memory > Number(flagValue(c, "--dram-bytes")), `${where} memory ${memory} does not cover --dram-bytes ${flagValue(c, "--dram-bytes")}`);
        check(workload.kind === "StatefulSet" && workload.spec.volumeClaimTemplates?.[0]?.metadata.name === "ssd", `${where} has no SSD PVC`);
        check(c.volumeMounts.some((m) => m.name === "ssd" && flagValue(c, "--ssd-dir").startsWith(m.mountPath + "/")), `${where} --ssd-dir is not on the PVC`);
        check(/^\$\(POD_NAME\)\.strata-kvstore\.\$\(POD_NAMESPACE\)\.svc\.cluster\.local:7480$/.test(flagValue(c, "--advertise-address")),
              `${where} does not advertise its stable DNS name: ${flagValue(c, "--advertise-address")}`);
      }
      if (daemon === "worker") {
        check(Number(c.resources.limits["nvidia.com/gpu"]) >= 1 && flagValue(c, "--backend") === "cuda", `${where} does not ask for a GPU and --backend cuda`);
        const shm = pod.volumes.find((vol) => vol.name === "dshm");
        check(shm?.emptyDir?.medium === "Memory" && bytesOf(shm.emptyDir.sizeLimit) > 0 && c.volumeMounts.some((m) => m.name === "dshm" && m.mountPath === "/dev/shm"),
              `${where} has no memory-backed /dev/shm of a set size`);
        const replicas = workloads(docs).find((w) => w.kind === "StatefulSet").spec.replicas;
        const kvstores = c.args.filter((_, i) => c.args[i - 1] === "--kvstore");
        check(kvstores.length === replicas && kvstores.every((a, i) => a === `strata-kvstore-${i}.strata-kvstore.llm.svc.cluster.local:7480`),
              `${where} --kvstore list ${kvstores} is not the ${replicas} kvstores' DNS names`);
        check(c.volumeMounts.some((m) => m.name === "model" && m.readOnly) && flagValue(c, "--model").startsWith("/models/"), `${where} does not read the model from /models`);
      }
    }
    check(byKind(docs, "PodDisruptionBudget").some((p) => p.metadata.name === "strata-kvstore"), `${tag} no kvstore PodDisruptionBudget`);
    check(byKind(docs, "Service").some((s) => s.metadata.name === "strata-kvstore" && s.spec.clusterIP === "None"), `${tag} no headless kvstore Service`);
    check(byKind(docs, "ConfigMap").some((m) => JSON.parse(m.data["strata.json"]).panels.length > 0), `${tag} no Grafana dashboard`);
  }
}

// ---- secrets ---------------------------------------------------------------------------------------------

const EKU = { serverAuth: "1.3.6.1.5.5.7.3.1", clientAuth: "1.3.6.1.5.5.7.3.2" };

function secrets() {
  // Generated: a CA and a certificate it signed, for strata.internal, usable as server and client, whose key
  // matches; a long random token; one API key for tenant `default`.
  const docs = render(VARIANTS[0]);
  const internal = byKind(docs, "Secret").find((s) => s.metadata.name === "strata-internal");
  if (check(internal, "no generated internal Secret with the default values")) {
    const ca = new X509Certificate(decode(internal, "ca.crt"));
    const cert = new X509Certificate(decode(internal, "tls.crt"));
    check(ca.ca, "ca.crt is not a CA certificate");
    check(cert.verify(ca.publicKey) && cert.checkIssued(ca), "tls.crt is not signed by ca.crt");
    check(cert.checkHost("strata.internal") === "strata.internal", `tls.crt does not name strata.internal: ${cert.subjectAltName}`);
    check(cert.checkPrivateKey(createPrivateKey(decode(internal, "tls.key"))), "tls.key is not the key of tls.crt");
    check(EKU.serverAuth && cert.keyUsage?.includes(EKU.serverAuth) && cert.keyUsage?.includes(EKU.clientAuth),
          `tls.crt is not usable for both mutual-TLS ends: extended key usage ${cert.keyUsage}`);
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
      for (const [flag, path] of files) {
        const key = path.slice((mount?.mountPath ?? "").length + 1);
        check(path.startsWith(mount.mountPath + "/") && (existing || key in secretsByName[name].data),
              `${where} ${flag} ${path} is not a key of the mounted Secret ${name}`);
      }
    }
    check(!existing || !secretsByName["strata-internal"], `${tag} generates an internal Secret although one is given`);
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
const commands = { lint, schema, flags: () => flags(rest), guarantees, secrets, run: () => run(rest) };
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
