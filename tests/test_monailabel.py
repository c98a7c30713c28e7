"""A real MONAI Label server on the bundle's app: info, infer, scoring, active learning, label upload.

Needs the MONAI Label environment (``bash bundle/monailabel_app/install.sh``, run by the README's
test command and by ``.ci/run``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from bundle.data.readers import ImageReadError
from conftest import TINY_ARCH, TINY_PAPER_ARCH
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "bundle" / "monailabel_app"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http(method: str, url: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read() or b"{}")


@contextlib.contextmanager
def running_server(trained_root: Path, arch: dict, tmp_path: Path):
    """The documented start command on copies of the app and of four studies; stopped by PID.

    The server's temporary folder (``TMPDIR``) is a folder of its own, so the tests can see every file
    it leaves there, and a stand-in ``gs`` first on its ``PATH`` records any call (Pillow runs
    Ghostscript for EPS).

    Yields:
        ``(url, studies, images, process, server_tmp, gs_marker)``.
    """
    try:
        import monailabel  # noqa: F401
    except ImportError as error:
        raise AssertionError("MONAI Label is not installed: run bash bundle/monailabel_app/install.sh") from error
    app, studies, server_tmp, fake_bin = (tmp_path / n for n in ("app", "studies", "server_tmp", "fake_bin"))
    shutil.copytree(APP, app)
    for folder in (studies, server_tmp, fake_bin):
        folder.mkdir()
    gs_marker = tmp_path / "gs_was_called"
    (fake_bin / "gs").write_text(f"#!/bin/sh\necho called > {gs_marker}\nexit 1\n")
    (fake_bin / "gs").chmod(0o755)
    images = sorted((trained_root / "data/images/site0").glob("*.png"))[:2]
    images += sorted((trained_root / "data/images/site2").glob("*.png"))[:2]
    for image in images:
        shutil.copy(image, studies / image.name)
    shutil.copytree(trained_root / "models", tmp_path / "models")  # the train task writes new weights there
    port = free_port()
    conf = ["--conf", "zoo_source", "github", "--conf", "models_dir", str(tmp_path / "models")]
    conf += ["--conf", "upload_limit_mb", "16"]
    for key, value in arch.items():  # the start script splits on spaces
        conf += ["--conf", key, value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))]
    command = ["monailabel", "start_server", "--app", str(app), "--studies", str(studies), *conf]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    env = {**os.environ, "MONAI_LABEL_AUTO_UPDATE_SCORING": "false", "TMPDIR": str(server_tmp)}
    # the script runs `python -m ...`; the stand-in gs comes first
    env["PATH"] = f"{fake_bin}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    log = open(tmp_path / "server.log", "w")
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            assert process.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            assert time.time() < deadline, "server did not start: " + (tmp_path / "server.log").read_text()[-3000:]
            try:
                http("GET", f"{url}/info/")
                break
            except OSError:
                time.sleep(1)
        yield url, studies, images, process, server_tmp, gs_marker
    finally:
        stop(process)
        log.close()


@pytest.fixture
def server(tiny_trained_paper, tmp_path):
    """Unlabelled studies have no NT box, so this server runs the single-view model (``--conf model paper``)."""
    root, _ = tiny_trained_paper
    with running_server(root, TINY_PAPER_ARCH, tmp_path) as running:
        yield running


def stop(process: subprocess.Popen) -> None:
    """Stop the server and its children by process group (the server's PID leads the group)."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def test_monailabel_server_end_to_end(server, tmp_path):
    from monailabel.client import MONAILabelClient

    url, studies, images, process, server_tmp, gs_marker = server
    client = MONAILabelClient(url, tmpdir=str(tmp_path))
    info = client.info()
    assert info["models"]["reconstruction"]["type"] == "others"
    assert {"ood"} == set(info["scoring"]) and {"most_unfamiliar"} == set(info["strategies"])
    assert info["datastore"]["total"] == 4
    _upload_over_the_limit(url, process)  # first, so the peak is the upload's, not an inference's

    # infer: reconstruction PNG in the original size plus JSON with the 128-value latent
    case = images[2].stem
    result_file, params = client.infer("reconstruction", case, {})
    params = json.loads(params) if isinstance(params, str) else params
    assert Image.open(result_file).size == Image.open(images[2]).size
    assert len(params["latent"]) == 128 and params["ood_score"] > 0 and "psnr" in params["metrics"]

    # scoring: plain HTTP, runs as a task; wait until it is done
    http("POST", f"{url}/scoring/ood")
    deadline = time.time() + 180
    while http("GET", f"{url}/scoring/").get("status") != "DONE":
        assert time.time() < deadline, http("GET", f"{url}/scoring/")
        time.sleep(1)
    scores = {i: client.datastore()["objects"][i]["image"]["info"]["ood_score"] for i in (p.stem for p in images)}
    assert all(np.isfinite(v) for v in scores.values())

    # active learning returns the most unfamiliar image, and skips it once it has a label
    first = http("POST", f"{url}/activelearning/most_unfamiliar", {})
    assert first["id"] == max(scores, key=scores.get)
    mask = np.zeros(Image.open(studies / f"{first['id']}.png").size[::-1], np.uint8)
    mask[10:20, 10:30] = 1
    Image.fromarray(mask).save(tmp_path / "label.png")
    client.save_label(first["id"], str(tmp_path / "label.png"), tag="final")
    second = http("POST", f"{url}/activelearning/most_unfamiliar", {})
    rest = {k: v for k, v in scores.items() if k != first["id"]}
    assert second["id"] == max(rest, key=rest.get) != first["id"]

    # attacks on the app (issue 19.10): each is a 4xx with a message, and nothing lands outside the studies
    _refused_requests(client, url, studies, images, tmp_path)
    # round 4 (issue 30): formats that run programs, the temp-folder bypass, upload size, leftovers
    _round_four(client, url, images, process, server_tmp, gs_marker, tmp_path)

    # train: the bundle's two phases on the labelled images (all four labelled now), new weights served
    for case in rest:  # each mask the size of its own image (the app checks)
        mask = np.zeros(Image.open(studies / f"{case}.png").size[::-1], np.uint8)
        mask[10:20, 10:30] = 1
        Image.fromarray(mask).save(tmp_path / f"label_{case}.png")
        client.save_label(case, str(tmp_path / f"label_{case}.png"), tag="final")
    assert http("POST", f"{url}/activelearning/most_unfamiliar", {}) == {}  # nothing left to label
    before = (tmp_path / "models/model.pt").stat().st_mtime
    http("POST", f"{url}/train/reconstruction", {"phase1_epochs": 1, "phase2_epochs": 1})
    deadline = time.time() + 300
    while (status := http("GET", f"{url}/train/")).get("status") != "DONE":
        assert status.get("status") != "ERROR" and time.time() < deadline, status
        time.sleep(2)
    assert (tmp_path / "models/model.pt").stat().st_mtime > before


def _status(call) -> tuple[int, str]:
    """HTTP status and body of a client call that must fail."""
    from monailabel.client.client import MONAILabelClientException

    try:
        call()
    except MONAILabelClientException as error:
        message = str(error.args[-1] if error.args else error)
        return int(message.split("Status: ", 1)[1].split(";", 1)[0]), message
    raise AssertionError("the request was accepted")


def _refused_requests(client, url: str, studies: Path, images: list[Path], tmp_path: Path) -> None:
    import urllib.error

    def infer_status(image: str) -> tuple[int, str]:
        query = f"{url}/infer/reconstruction?image={urllib.request.quote(image, safe='')}"
        try:
            http("POST", query, {})
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()
        raise AssertionError(f"infer on {image!r} was accepted")

    outside = tmp_path / "outside.png"
    shutil.copy(images[0], outside)  # a real image, but not in the datastore
    for image, expected in ((str(outside), 404), ("/etc/passwd", 404), ("no_such_id", 404)):
        status, body = infer_status(image)
        assert status == expected and "not in the datastore" in body, (image, status, body)
    status, body = _status(lambda: client.infer("reconstruction", images[0].stem, {"roi": "abc"}))
    assert status == 400 and "is not a box" in body, body

    status, body = _status(lambda: client.upload_image(str(images[0]), image_id="../outside/x"))
    assert status == 400 and "not a plain name" in body, body
    label = tmp_path / "mask.png"
    Image.fromarray(np.zeros(Image.open(images[0]).size[::-1], np.uint8)).save(label)
    status, body = _status(lambda: client.save_label(images[0].stem, str(label), tag="../../x"))
    assert status == 400 and "label tag" in body, body
    text = tmp_path / "text_label.png"
    text.write_text("not an image")
    status, body = _status(lambda: client.save_label(images[0].stem, str(text), tag="final"))
    assert status == 400 and "the uploaded label cannot be used: the content is not a PNG" in body, body
    assert not (tmp_path / "outside").exists() and not (studies.parent / "x").exists()
    assert not list(studies.parent.glob("x*")) and not (tmp_path / "x.png").exists()


def _multipart(url: str, method: str, field: str, filename: str, data: bytes) -> tuple[int, str]:
    """Send one file as multipart form data; (status, body)."""
    import urllib.error

    boundary = "fetalntboundary"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
    body = head.encode() + b"Content-Type: application/octet-stream\r\n\r\n" + data + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(url, data=body, method=method)
    request.add_header("Content-Type", f"multipart/form-data; boundary={boundary}")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def _declared_upload(url: str, size: int) -> tuple[int, str]:
    """Start a PUT that declares ``size`` bytes, send 1 MB of it and read the answer (the server must not wait)."""
    import http.client
    from urllib.parse import urlparse

    parsed = urlparse(url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
    connection.putrequest("PUT", parsed.path + "?" + parsed.query)
    connection.putheader("Content-Type", "multipart/form-data; boundary=x")
    connection.putheader("Content-Length", str(size))
    connection.endheaders()
    with contextlib.suppress(OSError):
        connection.send(b"\0" * 2**20)
    response = connection.getresponse()
    return response.status, response.read().decode()


def _peak_rss_mb(process: subprocess.Popen) -> float:
    """Highest peak resident memory (VmHWM) among the server's processes."""
    import psutil

    peaks = []
    for child in [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]:
        with contextlib.suppress(OSError, psutil.Error):
            status = Path(f"/proc/{child.pid}/status").read_text()
            peaks.append(int(status.split("VmHWM:")[1].split()[0]) / 1024)
    return max(peaks)


def _upload_over_the_limit(url: str, process: subprocess.Popen) -> None:
    """Issue 30.3: a 300 MB upload is refused (413) before its body is read; the server's memory does not grow."""
    before = _peak_rss_mb(process)
    status, body = _declared_upload(f"{url}/datastore/?image=huge", 300 * 2**20)
    assert status == 413 and "limit of 16 MB" in body, (status, body)
    after = _peak_rss_mb(process)
    assert after < 700 and after - before < 32, (before, after)  # 0.9.3 received the whole body first


def _round_four(client, url, images, process, server_tmp: Path, gs_marker: Path, tmp_path: Path) -> None:
    import urllib.error

    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\nshowpage\n%%EOF\n"
    # 1. an EPS named .png, as a datastore upload and as an infer upload: refused, Ghostscript never runs
    status, body = _multipart(f"{url}/datastore/?image=scan", "PUT", "file", "scan.png", eps)
    assert status == 400 and "not a PNG, JPEG, BMP or TIFF" in body, (status, body)
    status, body = _multipart(f"{url}/infer/reconstruction?output=json", "POST", "file", "scan.png", eps)
    assert status == 400 and "not a PNG, JPEG, BMP or TIFF" in body, (status, body)
    assert not gs_marker.exists()
    # 2. a file in the server's temporary folder named tmp*: not an upload of this request, so 404
    planted = server_tmp / "tmp_anything.png"
    shutil.copy(images[0], planted)
    query = f"{url}/infer/reconstruction?image={urllib.request.quote(str(planted), safe='')}&output=json"
    try:
        http("POST", query, {})
        raise AssertionError("a temporary file outside the datastore was read")
    except urllib.error.HTTPError as error:
        assert error.code == 404 and str(server_tmp) not in error.read().decode()
    planted.unlink()
    # an upload of a real image still works through the same endpoint
    status, body = _multipart(
        f"{url}/infer/reconstruction?output=json", "POST", "file", "ok.png", images[1].read_bytes()
    )
    assert status == 200 and len(json.loads(body)["latent"]) == 128, body[:300]
    # every refusal above left nothing behind, and no answer named a server path
    for bad in (f"{url}/datastore/?image=scan", f"{url}/infer/reconstruction?output=json"):
        status, body = _multipart(bad, "PUT" if "datastore" in bad else "POST", "file", "text.png", b"not an image")
        assert status == 400 and str(server_tmp) not in body and "/tmp" not in body, body
    # parameters that are not JSON, an unknown model: 4xx, and the upload is gone too
    query = f"{url}/infer/reconstruction?image={images[0].stem}"
    request = urllib.request.Request(query, data=b"params=%7Bnot", method="POST")
    request.add_header("Content-Type", "application/x-www-form-urlencoded")
    try:
        urllib.request.urlopen(request, timeout=60)
        raise AssertionError("params that are not JSON were accepted")
    except urllib.error.HTTPError as error:
        assert error.code == 400 and "params must be a JSON object" in error.read().decode()
    status, body = _multipart(f"{url}/infer/no_such_model", "POST", "file", "ok.png", images[1].read_bytes())
    assert status == 404 and "reconstruction" in body, (status, body)
    time.sleep(1)  # background removals of the successful request
    left = [p for p in server_tmp.rglob("*") if p.is_file()]
    assert not left, left  # MONAI Label's logging-config copy included: the app removes it at start


def test_the_dual_view_model_infers_without_a_box(tiny_trained, tmp_path):
    """Issue 31: infer on the default model without ``roi`` uses the NT localiser's box (0.9.3: a bare 500)."""
    import urllib.parse

    root, _ = tiny_trained
    with running_server(root, {**TINY_ARCH, "model": "dual_view"}, tmp_path) as (url, _, images, *_rest):
        info_path = tmp_path / "models" / "localizer.json"  # the served copy; loaded at the first inference
        info = json.loads(info_path.read_text())
        info["settings"]["threshold"] = 0.0  # a 2-epoch localiser is unsure of everything: accept its box
        info_path.write_text(json.dumps(info))
        case = images[0].stem
        result = http("POST", f"{url}/infer/reconstruction?image={case}&output=json", {})
        assert result["roi_source"] == "predicted" and len(result["nt_box"]) == 4 and len(result["latent"]) == 128
        form = f"{url}/infer/reconstruction?image={case}&output=json"
        data = urllib.parse.urlencode({"params": json.dumps({"roi": [10, 10, 40, 30]})}).encode()
        request = urllib.request.Request(form, data=data, method="POST")
        request.add_header("Content-Type", "application/x-www-form-urlencoded")
        with urllib.request.urlopen(request, timeout=120) as response:
            given = json.loads(response.read())
        assert given["roi_source"] == "given" and given["nt_box"] == [10, 10, 40, 30]


def test_without_a_localiser_the_dual_view_model_asks_for_the_box(tiny_trained, tmp_path):
    """No box and no localiser: the error names both ways out (the app turns it into a 400 with this text)."""
    from bundle.deploy.inference import Reconstructor

    root, _ = tiny_trained
    models = tmp_path / "models"
    shutil.copytree(root / "models", models)
    (models / "localizer.pt").unlink()
    image = sorted((root / "data/images/site0").glob("*.png"))[0]
    with pytest.raises(ImageReadError, match="no NT box.*train_localizer"):
        Reconstructor(overrides={"models_dir": str(models), **TINY_ARCH}).run(image)


def test_an_upload_without_a_declared_size_is_cut_off_at_the_limit():
    """The size limit counts a chunked body as it arrives (no Content-Length to refuse it by)."""
    import asyncio

    sys.path.insert(0, str(APP))
    try:
        from lib.uploads import _SizeLimit
    finally:
        sys.path.remove(str(APP))
    received = []

    async def app(scope, receive, send):  # reads the whole body, then answers 200
        while (message := await receive())["more_body"]:
            received.append(len(message["body"]))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def run(chunks: int) -> list[dict]:
        sent, queue = [], [{"type": "http.request", "body": b"x" * 1024, "more_body": True}] * chunks
        queue.append({"type": "http.request", "body": b"", "more_body": False})

        async def receive():
            return queue.pop(0)

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "method": "PUT", "headers": [(b"transfer-encoding", b"chunked")]}
        await _SizeLimit(app, 10 * 1024)(scope, receive, send)
        return sent

    small = asyncio.run(run(5))
    assert small[0]["status"] == 200
    received.clear()
    large = asyncio.run(run(1000))
    assert large[0]["status"] == 413 and b"over the server's limit" in large[1]["body"]
    assert sum(received) <= 10 * 1024  # stopped at the limit, not after a megabyte
