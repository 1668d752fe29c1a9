#!/usr/bin/env python3
"""Writes the seed corpora in fuzz/corpus/<target>/ (checked in; run again after a format change).

Seeds are small valid inputs of each format plus a few near misses, so that the fuzzer starts past the
parsers' first checks. The gRPC seeds are text-format requests encoded with protoc, framed as the
targets read them (fuzz/fuzz_input.h): a method byte, a length byte, the request's bytes.
Usage: python3 fuzz/make_seeds.py   (from the repository root; needs protoc)
"""
import json
import os
import struct
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")
DATA = os.path.join(ROOT, "tests", "data")


def write(target, name, data):
    os.makedirs(os.path.join(CORPUS, target), exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(CORPUS, target, name), "wb") as f:
        f.write(data)


def safetensors(tensors, metadata=None, pad=True):
    """tensors: [(name, dtype, shape, bytes)]."""
    header, data = {}, b""
    for name, dtype, shape, payload in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(payload)]}
        data += payload
    if metadata:
        header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def encode(message, text):
    return subprocess.run(["protoc", "--proto_path=" + ROOT, "--encode=strata.proto." + message,
                           "proto/kvstore.proto", "proto/scheduler.proto"],
                          input=text.encode(), capture_output=True, check=True, cwd=ROOT).stdout


def frame(calls):
    out = b""
    for method, payload in calls:
        assert len(payload) < 255
        out += bytes([method, len(payload)]) + payload
    return out


def key(i):
    return "\\x%02x" % i * 16  # a 16-byte block key, as protobuf text


f32 = struct.pack("<4f", 1.0, -2.0, 0.5, 3.0)
write("safetensors_fuzzer", "two_f32", safetensors([("a", "F32", [2], f32[:8]), ("b.weight", "F32", [2, 1], f32[8:])]))
write("safetensors_fuzzer", "f16_bf16_scalar", safetensors(
    [("h", "F16", [2], b"\x00\x3c\x00\xc0"), ("s", "BF16", [], b"\x80\x3f"), ("z", "F32", [0, 4], b"")],
    metadata={"format": "pt"}))
write("safetensors_fuzzer", "unpadded", safetensors([("x", "F32", [1], f32[:4])], pad=False))
write("safetensors_fuzzer", "gap", safetensors([("x", "F32", [1], f32[:4])]) + b"junk")
write("safetensors_fuzzer", "bad_dtype", safetensors([("x", "I64", [1], f32[:8])]))

index = {"metadata": {"total_size": 12}, "weight_map": {"a": "model-00001-of-00002.safetensors",
                                                        "b": "model-00001-of-00002.safetensors",
                                                        "c": "model-00002-of-00002.safetensors"}}
write("checkpoint_index_fuzzer", "valid", json.dumps(index))
index["weight_map"]["c"] = "../outside.safetensors"
write("checkpoint_index_fuzzer", "outside", json.dumps(index))
index["weight_map"]["c"] = "model-00001-of-00002.safetensors"
write("checkpoint_index_fuzzer", "wrong_shard", json.dumps(index))
write("checkpoint_index_fuzzer", "no_weight_map", '{"metadata": {}}')

for model in sorted(os.listdir(os.path.join(DATA, "models"))):
    with open(os.path.join(DATA, "models", model, "config.json"), "rb") as f:
        write("config_fuzzer", model, f.read())

with open(os.path.join(DATA, "tokenizer", "tokenizer.json")) as f:
    tokenizer_text = f.read()
write("tokenizer_json_fuzzer", "test_tokenizer", tokenizer_text)
small = json.loads(tokenizer_text)
small["model"]["vocab"] = {t: i for t, i in small["model"]["vocab"].items() if i < 280}
small["model"]["merges"] = [m for m in small["model"]["merges"]
                            if all(p in small["model"]["vocab"] for p in (m.split(" ") if isinstance(m, str) else m))
                            and "".join(m.split(" ") if isinstance(m, str) else m) in small["model"]["vocab"]]
write("tokenizer_json_fuzzer", "small_tokenizer", json.dumps(small, ensure_ascii=False))

with open(os.path.join(DATA, "tokenizer", "golden.json")) as f:
    samples = json.load(f)["samples"]
for i, sample in enumerate(samples[:12]):
    text = sample["text"] if isinstance(sample, dict) else sample
    write("tokenizer_codec_fuzzer", "text_%02d" % i, bytes([i & 1]) + text.encode())
    ids = sample.get("ids", []) if isinstance(sample, dict) else []
    write("tokenizer_codec_fuzzer", "ids_%02d" % i, bytes([2 | (i & 1)]) + struct.pack("<%di" % len(ids), *ids))
write("tokenizer_codec_fuzzer", "bad_ids", b"\x02" + struct.pack("<4i", -1, 1 << 30, 511, 0))
write("tokenizer_codec_fuzzer", "invalid_utf8", b"\x00caf\xc3 \xff\xfe")

# kvstore: 0 Connect, 1 Lookup, 2 BeginPut, 3 CommitPut, 4 AbortPut, 5 BeginGet, 6 RenewLease, 7 EndGet,
# 8 Delete, 9 Stats, 10 the worker writes and commits the last put.
put = encode("BeginPutRequest", 'items { key: "%s" size_bytes: 4096 } items { key: "%s" size_bytes: 100 '
             'parent_key: "%s" }' % (key(1), key(2), key(1)))
get = encode("BeginGetRequest", 'keys: "%s" keys: "%s" keys: "%s"' % (key(1), key(2), key(3)))
write("kvstore_service_fuzzer", "put_commit_get", frame([
    (0, b""), (2, put), (10, b""), (1, encode("LookupRequest", 'keys: "%s" keys: "%s"' % (key(1), key(2)))),
    (5, get), (6, encode("RenewLeaseRequest", "lease_id: 1")), (7, encode("EndGetRequest", "lease_id: 1")),
    (9, b"")]))
write("kvstore_service_fuzzer", "put_abort_delete", frame([
    (2, put), (3, encode("CommitPutRequest", "put_id: 1 checksums: 1 checksums: 2")),
    (4, encode("AbortPutRequest", "put_id: 1")), (8, encode("DeleteRequest", 'keys: "%s"' % key(1))), (9, b"")]))
write("kvstore_service_fuzzer", "big_and_bad", frame([
    (2, encode("BeginPutRequest", 'items { key: "%s" size_bytes: 70000 } items { key: "short" size_bytes: 1 }'
               % key(4))),
    (5, encode("BeginGetRequest", 'keys: "%s" keys: "%s"' % (key(5), key(5)))), (1, b"")]))

# scheduler: 0 Register, 1 Heartbeat, 2 Deregister, 3 KvEvents, 4 Route, 5 ListHolders. Epoch 0 in a
# request means "this holder's last registration" (the target fills it in).
fingerprint = "\\x07" * 32
worker = encode("RegisterRequest",
                'holder_id: "worker-0" kind: HOLDER_KIND_WORKER address: "127.0.0.1:1" '
                'key_scheme { version: 1 model_fingerprint: "%s" block_tokens: 16 } '
                'worker { gpu_kv_blocks: 64 host_kv_blocks: 64 block_bytes: 4096 prefill_linear_s_per_token: 0.001 '
                'host_to_gpu_bytes_per_s: 1e10 network_bytes_per_s: 1e9 model_name: "m" }' % fingerprint)
kvstore = encode("RegisterRequest",
                 'holder_id: "kvstore-0" kind: HOLDER_KIND_KVSTORE address: "127.0.0.1:2" key_scheme { version: 1 } '
                 'kvstore { dram_blocks: 64 ssd_blocks: 64 ssd_read_bytes_per_s: 1e9 }')
events = b""
for message in [
        'holder_id: "worker-0" inventory { sequence: 0 tiers { tier: TIER_GPU keys: "%s%s" } }' % (key(1), key(2)),
        'holder_id: "worker-0" events { sequence: 1 type: TYPE_STORED tier: TIER_HOST keys: "%s" } '
        'events { sequence: 2 type: TYPE_EVICTED keys: "%s" }' % (key(3), key(1))]:
    payload = encode("KvEventMessage", message)
    events += bytes([len(payload)]) + payload
route = encode("RouteRequest", 'model_fingerprint: "%s" token_ids: [1, 2, 3, 4, 5] prompt_tokens: 5 '
               'tenant: "t" policy: POLICY_CACHE_AWARE' % fingerprint)
write("scheduler_service_fuzzer", "register_events_route", frame([
    (0, worker), (0, kvstore), (1, encode("HeartbeatRequest", 'holder_id: "worker-0" load { running_requests: 1 } '
                                          'last_event_sequence: 0')),
    (3, events), (4, route), (5, b""), (2, encode("DeregisterRequest", 'holder_id: "kvstore-0"')), (5, b"")]))
write("scheduler_service_fuzzer", "route_by_keys", frame([
    (0, worker), (4, encode("RouteRequest", 'model_fingerprint: "%s" block_keys: "%s%s" prompt_tokens: 32'
                            % (fingerprint, key(1), key(2))))]))

# front door: first byte 0 /v1/completions, 1 /v1/chat/completions; the body follows.
def body(endpoint, request):
    return bytes([endpoint]) + json.dumps(request).encode()
write("frontdoor_request_fuzzer", "completion_text", body(0, {
    "model": "llama3-tiny", "prompt": "The quick brown fox", "max_tokens": 8, "temperature": 0.7, "top_p": 0.9,
    "stop": ["\n", "fox"], "seed": 3, "stream": True, "stream_options": {"include_usage": True}}))
write("frontdoor_request_fuzzer", "completion_ids", body(0, {
    "model": "llama3-tiny", "prompt": [1, 2, 3, 511], "max_tokens": 4, "top_k": 5, "stop_token_ids": [1],
    "ignore_eos": True, "cache_salt": "s", "disable_prefix_cache": True}))
write("frontdoor_request_fuzzer", "chat", body(1, {
    "model": "llama3-tiny", "messages": [{"role": "system", "content": "Be brief."},
                                         {"role": "user", "content": "Hi \u00e9\U0001F98A"},
                                         {"role": "assistant", "content": "Hello."},
                                         {"role": "user", "content": [{"type": "text", "text": "again"}]}],
    "max_completion_tokens": 16, "temperature": 0}))
write("frontdoor_request_fuzzer", "chat_too_long", body(1, {
    "model": "llama3-tiny", "messages": [{"role": "user", "content": "x"}], "max_tokens": 100000}))
write("frontdoor_request_fuzzer", "bad_json", b"\x00{\"model\": \"llama3-tiny\", \"prompt\": [1, -2,")
