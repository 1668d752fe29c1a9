// helm_chart_run: the chart's own command lines, generated certificate, token and API key run the three
// daemons on loopback (the tiny Llama on the CPU), as Kubernetes would start them on one host; the `helm test`
// pod's script must pass against that front door (and fail against a broken one), and every series the
// Grafana dashboard plots must be one the daemons export.
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, mkdirSync, openSync, rmSync, writeFileSync } from "node:fs";
import { createServer as createHttpServer } from "node:http";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { binaries, byKind, check, daemonContainers, decode, failureCount, render, root, skip } from "./chart.mjs";

const freePort = () => new Promise((ok, ko) => {
  const server = createServer().listen(0, "127.0.0.1", () => {
    const { port } = server.address();
    server.close(() => ok(port));
  }).on("error", ko);
});
const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));

// Runs the helm test pod's container command with `script`, asynchronously (a server of this process may be
// what it talks to); `stop()` returning true ends it early (a daemon it waits for died).
function runScript(container, script, env, stop = () => false) {
  return new Promise((ok) => {
    const child = spawn(container.command[0], [...container.command.slice(1), script], { env });
    let out = "";
    child.stdout.on("data", (d) => { out += d; });
    child.stderr.on("data", (d) => { out += d; });
    const started = Date.now();
    const watch = setInterval(() => { if (stop() || Date.now() - started > 100000) child.kill("SIGKILL"); }, 200);
    child.on("exit", (status) => { clearInterval(watch); ok({ status, stdout: out, stderr: "" }); });
  });
}

// The helm test can fail: against a front door that answers a completion without text, or refuses the
// key, its script exits non-zero, saying why.
async function helmTestScriptFails(docs) {
  const test = byKind(docs, "Pod")[0].spec.containers[0];
  const answers = [
    [200, { object: "text_completion", choices: [{ text: "", finish_reason: "length" }], usage: { prompt_tokens: 3, completion_tokens: 0 } }, /malformed_completion/],
    [200, { object: "chat.completion", choices: [], usage: {} }, /malformed_completion/],
    [401, { error: { message: "invalid API key", type: "invalid_request_error" } }, /refused: HTTP 401/],
  ];
  for (const [status, body, says] of answers) {
    const server = createHttpServer((req, res) => { req.resume(); res.writeHead(status, { "Content-Type": "application/json" }).end(JSON.stringify(body)); });
    await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
    const script = test.args[0].replace(/http:\/\/strata-scheduler:[0-9]+/, `http://127.0.0.1:${server.address().port}`);
    const env = { ...process.env, MODEL: "m", PROMPT: "p", MAX_TOKENS: "4", API_KEY: "k" };
    const r = await runScript(test, script, env);
    server.close();
    check(r.status !== 0 && says.test(r.stdout), `the helm test script did not fail on HTTP ${status} ${JSON.stringify(body)}: ${r.stdout}`);
  }
}

export async function run(argv) {
  const bins = binaries(argv);
  for (const tool of ["curl", "jq"]) {
    if (spawnSync("sh", ["-c", `command -v ${tool}`]).status !== 0) skip(`no ${tool} (the helm test pod's script needs it; deploy/install-deps.sh installs it)`);
  }
  const p = {};
  // Ten distinct ports: a port closed after the probe can be handed out again by the next probe.
  const taken = new Set();
  for (const k of ["http", "sg", "sm", "sh", "kg", "km", "kh", "wg", "wm", "wh"]) {
    do p[k] = await freePort(); while (taken.has(p[k]));
    taken.add(p[k]);
  }
  // The defaults (TLS, token and API key on), scaled to one CPU worker, one small kvstore and the tiny Llama.
  const docs = render({ name: "loopback", files: [], set: [
    "model.dir=llama3-tiny", "worker.backend=cpu", "worker.gpus=0", "worker.replicas=1", "kvstore.replicas=1",
    // One scheduler: on one host two replicas' DNS names would both be 127.0.0.1 (the replicas have their own test).
    "scheduler.replicas=1",
    "kvstore.dramBytes=67108864", "worker.hostCacheBytes=16777216", "worker.kvstoreStagingBytes=16777216", "worker.drainMs=2000",
    `frontDoor.httpPort=${p.http}`, `scheduler.ports.grpc=${p.sg}`, `scheduler.ports.metrics=${p.sm}`, `scheduler.ports.health=${p.sh}`,
    `kvstore.ports.grpc=${p.kg}`, `kvstore.ports.metrics=${p.km}`, `kvstore.ports.health=${p.kh}`,
    `worker.ports.grpc=${p.wg}`, `worker.ports.metrics=${p.wm}`, `worker.ports.health=${p.wh}`],
    setString: ["worker.extraArgs={--threads,1}"] });
  await helmTestScriptFails(docs);
  const scratch = mkdtempSync(join(tmpdir(), "strata-chart-run-"));
  const children = [];
  try {
    // Each pod's Secret volumes as files under scratch/<daemon>/<volume>: the keys it projects (`items`, as
    // the kubelet maps them: each role sees its own certificate as tls.crt), or every key.
    const secrets = Object.fromEntries(byKind(docs, "Secret").map((s) => [s.metadata.name, s]));
    const secretMounts = ({ daemon, pod, c }) => (c.volumeMounts ?? []).flatMap((m) => {
      const secret = pod.volumes.find((v) => v.name === m.name)?.secret;
      if (!secret) return [];
      const dir = join(scratch, daemon, m.name);
      mkdirSync(dir, { recursive: true });
      const items = secret.items ?? Object.keys(secrets[secret.secretName].data).map((key) => ({ key, path: key }));
      for (const { key, path } of items) writeFileSync(join(dir, path), decode(secrets[secret.secretName], key), { mode: 0o600 });
      return [[m.mountPath + "/", dir + "/"]];
    });
    mkdirSync(join(scratch, "ssd"));
    // What Kubernetes would do to a command line, on one host: $(VAR) from the downward API, the pod's mounts,
    // and every Service DNS name resolving to loopback. 0.0.0.0 becomes 127.0.0.1 (nothing listens outside).
    const localize = (arg, podName, mounts) => mounts.reduce((a, [from, to]) => (a.startsWith(from) ? to + a.slice(from.length) : a), arg)
      .replaceAll("$(POD_NAME)", podName).replaceAll("$(POD_NAMESPACE)", "llm").replaceAll("$(POD_IP)", "127.0.0.1")
      .replace(/[a-z0-9.-]+\.svc\.cluster\.local:/g, "127.0.0.1:")
      .replaceAll("0.0.0.0", "127.0.0.1")
      .replace(/^\/models\//, join(root, "tests/data/models") + "/")
      .replace(/^\/var\/lib\/strata\/ssd\//, join(scratch, "ssd") + "/");
    const start = ({ daemon, pod, c }) => {
      const podName = `strata-${daemon}-0`;
      const mounts = secretMounts({ daemon, pod, c });
      const args = c.args.map((a) => localize(a, podName, mounts));
      const env = { ...process.env, OMP_WAIT_POLICY: "passive" };
      for (const e of c.env ?? []) if (e.value !== undefined) env[e.name] = e.value;
      const log = join(scratch, `${daemon}.log`);
      const child = spawn(bins[daemon], args, { env, stdio: ["ignore", openSync(log, "w"), openSync(log, "a")] });
      children.push({ daemon, child, log, exited: null });
      child.on("exit", (code, signal) => { children.find((x) => x.child === child).exited = signal ?? code; });
      console.log(`started ${daemon}: ${bins[daemon]} ${args.join(" ")}`);
    };
    const daemons = daemonContainers(docs);
    for (const name of ["scheduler", "kvstore", "worker"]) start(daemons.find((d) => d.daemon === name));

    // The helm test pod's own script, against the front door on loopback (it retries while the worker
    // registers, within a heartbeat or two).
    const test = byKind(docs, "Pod")[0].spec.containers[0];
    const script = test.args[0].replace(/http:\/\/strata-scheduler:/, "http://127.0.0.1:");
    const env = { ...process.env };
    for (const e of test.env) env[e.name] = e.value ?? decode(secrets[e.valueFrom.secretKeyRef.name], e.valueFrom.secretKeyRef.key);
    const result = await runScript(test, script, env, () => children.some((x) => x.exited !== null));
    check(result?.status === 0, `the helm test script did not pass against the chart's cluster: ${result?.stdout}${result?.stderr}`);
    if (result?.status === 0) console.log(result.stdout.trim());
    // Without the API key the front door refuses.
    const anonymous = spawnSync("curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Content-Type: application/json",
      "-d", '{"model":"llama3-tiny","prompt":"x","max_tokens":1}', `http://127.0.0.1:${p.http}/v1/completions`], { encoding: "utf8" });
    check(anonymous.stdout === "401", `a completion without the API key got HTTP ${anonymous.stdout}, not 401`);
    // Every series the Grafana dashboard plots is one these daemons export (dashboard and binaries cannot drift).
    const exported = new Set();
    for (const port of [p.sm, p.km, p.wm]) {
      const text = spawnSync("curl", ["-s", "--max-time", "10", `http://127.0.0.1:${port}/metrics`], { encoding: "utf8" }).stdout;
      for (const [, name] of text.matchAll(/^(strata_[a-z0-9_]+?)(?:_bucket|_sum|_count)?[{ ]/gm)) exported.add(name);
    }
    const dashboard = JSON.parse(byKind(docs, "ConfigMap")[0].data["strata.json"]);
    const plotted = new Set(dashboard.panels.flatMap((panel) => panel.targets ?? [])
      .flatMap((t) => [...t.expr.matchAll(/\b(strata_[a-z0-9_]+)/g)].map((m) => m[1].replace(/_bucket$/, ""))));
    for (const name of plotted) check(exported.has(name), `the dashboard plots ${name}, which no daemon exports`);
    console.log(`dashboard: ${plotted.size} series checked against ${exported.size} exported`);
    for (const x of children) check(x.exited === null, `${x.daemon} exited (${x.exited}) under the chart's command line; log ${x.log}`);
  } finally {
    for (const x of children) if (x.exited === null) x.child.kill("SIGTERM");
    for (const deadline = Date.now() + 15000; children.some((x) => x.exited === null) && Date.now() < deadline;) await sleep(100);
    for (const x of children) if (x.exited === null) x.child.kill("SIGKILL");
    if (failureCount() > 0) {
      for (const x of children) console.log(`--- ${x.daemon} log (last lines):\n${spawnSync("tail", ["-n", "15", x.log], { encoding: "utf8" }).stdout}`);
    }
    rmSync(scratch, { recursive: true, force: true });
  }
}
