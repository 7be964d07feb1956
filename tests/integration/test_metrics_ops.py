"""GET /metrics: Prometheus text format, parsed with prometheus_client's own parser."""

from __future__ import annotations

from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from ._support import BASE_DN, ROOT_DN, ROOT_PW, connect
from .rest_support import RestServer


def _scrape(srv: RestServer) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    resp = httpx.get(srv.base_url + "/metrics", timeout=10)  # no credentials: like exporters
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    out: dict[str, list[tuple[str, dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(resp.text):
        out[fam.name] = [(s.name, s.labels, s.value) for s in fam.samples]
    return out


def _value(fams: dict[str, list[tuple[str, dict[str, str], float]]], sample: str,
           **labels: str) -> float:
    for family in fams.values():
        for name, lab, value in family:
            if name == sample and all(lab.get(k) == v for k, v in labels.items()):
                return value
    raise AssertionError(f"no sample {sample} {labels}")


def test_metrics_are_parsable_and_track_the_node(tmp_path: Path) -> None:
    srv = RestServer("oba", tmp_path / "srv")
    srv.start()
    try:
        before = _scrape(srv)
        assert _value(before, "oba_entries") == 1
        conn = connect(srv.url, ROOT_DN, ROOT_PW)
        conn.add_s(f"ou=m,{BASE_DN}", [("objectClass", [b"organizationalUnit"]), ("ou", [b"m"])])
        for _ in range(3):
            conn.search_s(BASE_DN, 2, "(objectClass=*)")
        conn.unbind_s()
        fams = _scrape(srv)
        assert _value(fams, "oba_entries") == 2
        assert _value(fams, "oba_ldap_operations_total", type="search") >= 3
        assert _value(fams, "oba_ldap_operations_total", type="add") >= 1
        assert _value(fams, "oba_ldap_results_total", code="0") >= 5
        assert _value(fams, "oba_ldap_connections_accepted_total") >= 1
        assert _value(fams, "oba_ldap_connections") >= 0
        assert _value(fams, "oba_db_size_bytes") > 0
        assert _value(fams, "oba_applied_index") >= 2
        assert _value(fams, "oba_info", version="0.1.0") == 1
        assert _value(fams, "process_resident_memory_bytes") > 0
        assert "oba_ldap_operation_duration_seconds" in fams  # histogram family (see docs)
        assert "oba_raft_term" not in fams  # standalone node: no Raft metrics
    finally:
        srv.stop()


def test_grafana_dashboard_uses_exported_metric_names() -> None:
    import json
    import re

    repo = Path(__file__).resolve().parents[2]
    dash = json.loads((repo / "deploy" / "grafana-dashboard.json").read_text())
    source = (repo / "src" / "oba" / "metrics.py").read_text()
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    names = {re.sub(r"_(total|bucket)$", "", n) for e in exprs
             for n in re.findall(r"\boba_[a-z_]+", e)}
    assert names and all(f'"{n}"' in source for n in names), names
