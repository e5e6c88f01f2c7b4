"""Schemathesis hooks for tests/integration/schemathesis.rs (loaded through SCHEMATHESIS_HOOKS).

Positive test cases of POST /identity/certificate get a real request: the provider's token and
a valid CSR whose CN is the cluster ID, both made by the Rust test and read from the JSON file
named by LIQO_AUTH_SCHEMATHESIS_FIXTURE. A schema alone cannot produce a self-signed PKCS#10
request, and without the token every positive case would stop at 401. Negative cases are left
exactly as generated, so the server must refuse them.
"""

import json
import os

import schemathesis

with open(os.environ["LIQO_AUTH_SCHEMATHESIS_FIXTURE"], encoding="utf-8") as fixture_file:
    FIXTURE = json.load(fixture_file)


def _positive(case):
    meta = getattr(case, "meta", None) or getattr(case, "_meta", None)
    mode = getattr(getattr(meta, "generation", None), "mode", None)
    return str(mode) in ("positive", "GenerationMode.POSITIVE")


@schemathesis.hook
def map_case(context, case):
    if case.operation.path != "/identity/certificate" or not _positive(case):
        return case
    body = case.body if isinstance(case.body, dict) else {}
    # The generated cluster picks one of the prepared identities, deterministically.
    peers = FIXTURE["peers"]
    cluster = body.get("cluster") if isinstance(body.get("cluster"), dict) else {}
    peer = peers[len(str(cluster.get("clusterID", ""))) % len(peers)]
    body["cluster"] = {"clusterID": peer["clusterID"], "clusterName": peer["clusterName"]}
    body["destinationClusterToken"] = FIXTURE["token"]
    body["certificateSigningRequest"] = peer["certificateSigningRequest"]
    case.body = body
    return case
