#!/usr/bin/env python3
"""Writes the seeds of the fuzz targets to seeds/<target>/ (one input per file). Run from
anywhere: python3 tests/fuzz/make_seeds.py"""
import json
import os
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "fixtures")
TYPES = {"A": 1, "NS": 2, "SOA": 6, "PTR": 12, "TXT": 16, "AAAA": 28, "SRV": 33, "ANY": 255}


def name(text):
    wire = b""
    for label in text.strip(".").split("."):
        if label:
            wire += bytes([len(label)]) + label.encode()
    return wire + b"\x00"


def query(qid, qname, qtype, edns=None, do=False, rd=True, qclass=1):
    flags = 0x0100 if rd else 0
    header = struct.pack(">HHHHHH", qid, flags, 1, 0, 0, 1 if edns is not None else 0)
    msg = header + name(qname) + struct.pack(">HH", TYPES.get(qtype, qtype), qclass)
    if edns is not None:
        msg += b"\x00" + struct.pack(">HHBBHH", 41, edns, 0, 0, 0x8000 if do else 0, 0)
    return msg


SEEDS = {
    "a_headless": query(0x1234, "nginx.ns-0.svc.cluster.local", "A"),
    "a_headless_edns": query(0x1235, "nginx.ns-0.svc.cluster.local", "A", edns=1232),
    "aaaa_headless_edns_do": query(0x1236, "nginx.ns-0.svc.cluster.local", "AAAA", edns=4096, do=True),
    "a_endpoint_mixed_case": query(0x1237, "Web-0.NGINX.ns-0.svc.Cluster.Local", "A"),
    "a_clusterip": query(0x1238, "api.ns-0.svc.cluster.local", "A"),
    "aaaa_clusterip_edns": query(0x1239, "api.ns-0.svc.cluster.local", "AAAA", edns=1232),
    "srv_headless": query(0x123A, "_web._tcp.nginx.ns-0.svc.cluster.local", "SRV"),
    "srv_headless_edns": query(0x123B, "_web._tcp.nginx.ns-0.svc.cluster.local", "SRV", edns=1232),
    "srv_big_edns": query(0x123C, "_web._tcp.sts.big.svc.cluster.local", "SRV", edns=1232),
    "a_huge_tcp_sized": query(0x123D, "huge.big.svc.cluster.local", "A", edns=65535),
    "ptr_v4": query(0x123E, "5.1.244.10.in-addr.arpa", "PTR"),
    "ptr_v6_edns": query(0x123F, ".".join(reversed("fd00" + "0" * 27 + "5")) + ".ip6.arpa", "PTR", edns=1232),
    "ptr_clusterip": query(0x1240, "20.0.96.10.in-addr.arpa", "PTR", edns=512),
    "cname_externalname": query(0x1241, "db.ns-0.svc.cluster.local", "A"),
    "nxdomain": query(0x1242, "missing.ns-0.svc.cluster.local", "A", edns=1232),
    "soa_apex": query(0x1243, "cluster.local", "SOA"),
    "any_apex_edns": query(0x1244, "cluster.local", "ANY", edns=1232),
    "txt_dns_version": query(0x1245, "dns-version.cluster.local", "TXT"),
    "pod_insecure": query(0x1246, "10-244-1-5.ns-0.pod.cluster.local", "A"),
    "second_zone": query(0x1247, "nginx.ns-0.svc.k8s.test", "A", edns=1232),
    "out_of_zone": query(0x1248, "example.com", "A"),
    "class_chaos": query(0x1249, "version.bind", "TXT", qclass=3),
    "edns_version_1": query(0x124A, "nginx.ns-0.svc.cluster.local", "A", edns=1232)[:-6]
    + b"\x00\x01\x80\x00\x00\x00",  # ext-rcode 0, version 1, DO, no options
}


# === tcp_framing: the byte stream a client sends ===


def framed(*messages):
    return b"".join(struct.pack(">H", len(m)) + m for m in messages)


AXFR, IXFR = 252, 251


def ixfr_query(qid, zone, serial):
    """An IXFR request: the client's SOA (only its serial matters) in the authority section."""
    header = struct.pack(">HHHHHH", qid, 0, 1, 0, 1, 0)
    soa = b"\x00\x00" + struct.pack(">IIIII", serial, 0, 0, 0, 0)  # root mname and rname
    return header + name(zone) + struct.pack(">HH", IXFR, 1) + name(zone) + struct.pack(">HHIH", 6, 1, 0, len(soa)) + soa


TCP_SEEDS = {
    "one_query": framed(SEEDS["a_headless"]),
    "pipelined": framed(SEEDS["a_headless"], SEEDS["srv_big_edns"], SEEDS["nxdomain"], SEEDS["class_chaos"]),
    "axfr": framed(query(0x2001, "cluster.local", AXFR, rd=False)),
    "axfr_then_query": framed(query(0x2002, "k8s.test", AXFR, rd=False), SEEDS["soa_apex"]),
    "ixfr": framed(ixfr_query(0x2003, "cluster.local", 1)),
    "too_long": framed(SEEDS["a_headless"]) + b"\x10\x01" + b"\x00" * 16,
    "cut_in_message": framed(SEEDS["ptr_v4"])[:-3],
    "cut_in_prefix": framed(SEEDS["ptr_v4"]) + b"\x00",
    "empty_message": framed(b"", SEEDS["a_headless"]),
    # Answers over the server's batch of 8 KiB (TCP_BATCH): written before the batch ends.
    "big_answers": framed(*[SEEDS["srv_big_edns"]] * 4),
    # More than one read of 8 KiB (TCP_READ): a message straddles the reads, and the last is cut.
    "over_one_read": framed(*[SEEDS["a_headless"], SEEDS["srv_big_edns"], SEEDS["ptr_v4"]] * 80)[:-5],
}

# === transfer: what a primary sends back (the first byte: even AXFR, odd IXFR from HELD) ===

TRANSFER_ID = 0x4858
HELD = 2026120301


def rr(owner, rtype, rdata, ttl=30):
    return name(owner) + struct.pack(">HHIH", rtype, 1, ttl, len(rdata)) + rdata


def soa_rr(serial, zone="cluster.local"):
    rdata = name("ns.dns." + zone) + name("hostmaster." + zone) + struct.pack(">IIIII", serial, 7200, 1800, 86400, 5)
    return rr(zone, 6, rdata)


def answer(*records, qtype=AXFR, rcode=0):
    header = struct.pack(">HHHHHH", TRANSFER_ID, 0x8400 | rcode, 1, len(records), 0, 0)
    return header + name("cluster.local") + struct.pack(">HH", qtype, 1) + b"".join(records)


A1 = rr("nginx.ns-0.svc.cluster.local", 1, bytes([10, 244, 1, 5]))
A2 = rr("nginx.ns-0.svc.cluster.local", 1, bytes([10, 244, 2, 7]))
AAAA = rr("nginx.ns-0.svc.cluster.local", 28, bytes.fromhex("fd00" + "00" * 13 + "05"))
SRV = rr("_web._tcp.nginx.ns-0.svc.cluster.local", 33, struct.pack(">HHH", 0, 50, 80) + name("web-0.nginx.ns-0.svc.cluster.local"))
PTR = rr("5.1.244.10.in-addr.arpa", 12, name("web-0.nginx.ns-0.svc.cluster.local"))
CNAME = rr("db.ns-0.svc.cluster.local", 5, name("db.example.com"))
TXT = rr("dns-version.cluster.local", 16, b"\x051.1.0")
NS = rr("cluster.local", 2, name("ns.dns.cluster.local"))
NEW = HELD + 1

TRANSFER_SEEDS = {
    "axfr_one_message": b"\x00" + framed(answer(soa_rr(NEW), NS, A1, A2, AAAA, SRV, PTR, CNAME, TXT, soa_rr(NEW))),
    "axfr_three_messages": b"\x00" + framed(answer(soa_rr(NEW), A1), answer(A2, SRV), answer(PTR, soa_rr(NEW))),
    "axfr_empty_zone": b"\x00" + framed(answer(soa_rr(NEW), soa_rr(NEW))),
    "ixfr_one_version": b"\x01"
    + framed(answer(soa_rr(NEW), soa_rr(HELD), A1, soa_rr(NEW), A2, SRV, soa_rr(NEW), qtype=IXFR)),
    "ixfr_two_versions": b"\x01"
    + framed(
        answer(soa_rr(NEW + 1), soa_rr(HELD), A1, soa_rr(NEW), A2, qtype=IXFR),
        answer(soa_rr(NEW), A2, soa_rr(NEW + 1), A1, soa_rr(NEW + 1), qtype=IXFR),
    ),
    "ixfr_current": b"\x01" + framed(answer(soa_rr(HELD), qtype=IXFR)),
    "ixfr_answered_by_axfr": b"\x01" + framed(answer(soa_rr(NEW), A1, soa_rr(NEW), qtype=IXFR)),
    "refused": b"\x00" + framed(answer(rcode=5)),
    "cut_before_final_soa": b"\x00" + framed(answer(soa_rr(NEW), A1, A2)),
}

# === manifests: YAML files (the fixtures, and forms they do not use) ===

MANIFEST_SEEDS = {
    "json_document.yaml": json.dumps(
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "api", "namespace": "ns-0"},
         "spec": {"clusterIP": "10.96.0.20", "ports": [{"name": "https", "port": 443}]}}
    ),
    "anchors.yaml": "base: &svc {apiVersion: v1, kind: Service}\n---\n"
    "<<: {apiVersion: v1, kind: Namespace}\nmetadata: &m {name: ns-a}\n---\n"
    "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: ns-a}\nstatus: {podIP: 10.1.1.1, podIPs: [{ip: 10.1.1.1}]}\n",
    "bad_item.yaml": "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Service, metadata: {name: a, namespace: b}, "
    "spec: {ports: [{port: \"80\"}]}}\n- {apiVersion: v1, kind: Service, metadata: {name: c, namespace: b}, spec: {clusterIP: None}}\n",
    # A key over YAML's 1,024-character limit on implicit keys (the fast reader must leave it to
    # serde-saphyr, which rejects it; found by fuzzing).
    "long_implicit_key.yaml": "apiVersion: v1\nkind: Service\nmetadata: {name: api, namespace: ns-0}\n"
    "spec: {\"" + "n" * 1045 + "\": 1, clusterIP: 10.96.0.30}\n",
    # Inputs on which the fast reader and serde-saphyr once differed, as the fuzzer found them: a
    # byte order mark inside a line, the merge key `<<`, U+FFFF in a comment.
    "bom_inside_a_line.yaml": b"base: \xef\xbb\xbf# Fixture for tapiVersio[iV<eE",
    "merge_key.yaml": b"e}\n---\n<<: # Asetdless`,rviceImports of botla{apiVersion: v1i eb,klnd",
    "non_character_in_comment.yaml": b"#r\xef\xbf\xbfaas \n",
}

# === watch_event: one line of a watch stream ===

SERVICE = {"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": "nginx", "namespace": "ns-0", "resourceVersion": "42"},
           "spec": {"clusterIP": "None", "clusterIPs": ["None"], "ports": [{"name": "web", "port": 80, "protocol": "TCP"}],
                    "ipFamilies": ["IPv4", "IPv6"]}}
SLICE = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": "nginx-abc", "namespace": "ns-0", "resourceVersion": "43",
                      "labels": {"kubernetes.io/service-name": "nginx"},
                      "annotations": {"endpoints.kubernetes.io/last-change-trigger-time": "2026-12-03T12:00:00Z"}},
         "addressType": "IPv4", "ports": [{"name": "web", "port": 80, "protocol": "TCP"}],
         "endpoints": [{"addresses": ["10.244.1.5"], "hostname": "web-0", "conditions": {"ready": True},
                        "targetRef": {"kind": "Pod", "name": "web-0", "namespace": "ns-0"}, "nodeName": "n1"}]}
POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-0", "namespace": "ns-0"},
       "spec": {"hostname": "web-0", "subdomain": "nginx"},
       "status": {"phase": "Running", "podIP": "10.244.1.5", "podIPs": [{"ip": "10.244.1.5"}, {"ip": "fd00::5"}]}}
NAMESPACE = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns-0", "labels": {"team": "a"}}}
IMPORT = {"apiVersion": "multicluster.x-k8s.io/v1beta1", "kind": "ServiceImport",
          "metadata": {"name": "myservice", "namespace": "test"},
          "spec": {"type": "ClusterSetIP", "ips": ["10.42.42.42"], "ports": [{"name": "https", "protocol": "TCP", "port": 443}]}}


def event(kind, obj, object_first=False):
    if object_first:
        return json.dumps({"object": obj, "type": kind}).encode()
    return json.dumps({"type": kind, "object": obj}).encode()


WATCH_SEEDS = {
    "service_added": event("ADDED", SERVICE),
    "slice_modified": event("MODIFIED", SLICE),
    "pod_added": event("ADDED", POD),
    "namespace_deleted": event("DELETED", NAMESPACE),
    "import_added": event("ADDED", IMPORT),
    "object_before_type": event("ADDED", SERVICE, object_first=True),
    "bad_port_type": event("ADDED", {**SERVICE, "spec": {"ports": [{"port": "80"}]}}),
    "bookmark": event("BOOKMARK", {"kind": "Service", "apiVersion": "v1", "metadata": {"resourceVersion": "44"}}),
    "error": event("ERROR", {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 410,
                            "reason": "Expired", "message": "too old resource version"}),
}


def write(target, seeds):
    out = os.path.join(HERE, "seeds", target)
    os.makedirs(out, exist_ok=True)
    for stem, data in sorted(seeds.items()):
        data = data.encode() if isinstance(data, str) else data
        with open(os.path.join(out, stem if "." in stem else stem + ".bin"), "wb") as f:
            f.write(data)
    print(f"wrote {len(seeds)} seeds to {out}")


def main():
    write("query_path", SEEDS)
    write("tcp_framing", TCP_SEEDS)
    write("transfer", TRANSFER_SEEDS)
    manifests = dict(MANIFEST_SEEDS)
    for fixture in ("records.yaml", "clusterset.yaml"):
        with open(os.path.join(FIXTURES, fixture), "rb") as f:
            manifests[fixture] = f.read()
    write("manifests", manifests)
    write("watch_event", WATCH_SEEDS)


if __name__ == "__main__":
    main()
