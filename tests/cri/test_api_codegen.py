"""The committed CRI stubs match protos/ (and the check really notices a change of the proto)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from k8sx.cri import codegen


def test_committed_stubs_are_current():
    r = subprocess.run([sys.executable, "-m", "k8sx.cri.codegen", "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_proto_is_the_upstream_file():
    with open(os.path.join(codegen.PROTO_ROOT, codegen.PROTO), encoding="utf-8") as f:
        text = f.read()
    assert text.startswith("/*\nCopyright 2020 The Kubernetes Authors.")
    assert "package runtime.v1;" in text
    assert "gogoproto" not in text


def test_check_notices_a_changed_proto(tmp_path, monkeypatch):
    protos = tmp_path / "k8sxtc-protos"
    shutil.copytree(codegen.PROTO_ROOT, protos)
    api = protos / codegen.PROTO
    api.write_text(api.read_text().replace(
        "message VersionRequest {", "message VersionRequest {\n    string k8sxtc_extra = 99;", 1))
    monkeypatch.setattr(codegen, "PROTO_ROOT", str(protos))
    out = tmp_path / "out"
    out.mkdir()
    stale = codegen.stale_files(codegen.generate(str(out)))
    assert os.path.join(codegen.OUT_DIR, "api_pb2.py") in stale


def test_stubs_speak_runtime_v1():
    from k8sx.cri.api.runtime.v1 import api_pb2

    assert api_pb2.DESCRIPTOR.package == "runtime.v1"
    services = api_pb2.DESCRIPTOR.services_by_name
    assert {"RuntimeService", "ImageService"} <= set(services)
    assert "ImageFsInfo" in services["ImageService"].methods_by_name
    # cri-api 0.34.9+: env values are bytes (wire-compatible with the older string)
    assert api_pb2.KeyValue.DESCRIPTOR.fields_by_name["value"].type == api_pb2.KeyValue.DESCRIPTOR.fields_by_name[
        "value"].TYPE_BYTES
