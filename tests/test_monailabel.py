"""A real MONAI Label server on the bundle's app: info, infer, scoring, active learning, label upload.

Needs the MONAI Label environment (``bash bundle/monailabel_app/install.sh``, run by the README's
test command and by ``.ci/run``).
"""

from __future__ import annotations

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
from conftest import TINY_PAPER_ARCH
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


@pytest.fixture
def server(tiny_trained_paper, tmp_path):
    """The documented start command on copies of the app and of four studies; stopped by PID.

    Unlabelled studies have no NT box, so the server runs the single-view model (``--conf model paper``);
    the dual-view model needs boxes (tests/test_inference.py).
    """
    try:
        import monailabel  # noqa: F401
    except ImportError as error:
        raise AssertionError("MONAI Label is not installed: run bash bundle/monailabel_app/install.sh") from error
    root, _ = tiny_trained_paper
    app, studies = tmp_path / "app", tmp_path / "studies"
    shutil.copytree(APP, app)
    studies.mkdir()
    images = (
        sorted((root / "data/images/site0").glob("*.png"))[:2] + sorted((root / "data/images/site2").glob("*.png"))[:2]
    )
    for image in images:
        shutil.copy(image, studies / image.name)
    shutil.copytree(root / "models", tmp_path / "models")  # the train task writes new weights there
    port = free_port()
    conf = ["--conf", "zoo_source", "github", "--conf", "models_dir", str(tmp_path / "models")]
    for key, value in TINY_PAPER_ARCH.items():  # the start script splits on spaces
        conf += ["--conf", key, value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))]
    command = ["monailabel", "start_server", "--app", str(app), "--studies", str(studies), *conf]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    env = {**os.environ, "MONAI_LABEL_AUTO_UPDATE_SCORING": "false"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # the script runs `python -m ...`
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
        yield url, studies, images
    finally:
        stop(process)
        log.close()


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

    url, studies, images = server
    client = MONAILabelClient(url, tmpdir=str(tmp_path))
    info = client.info()
    assert info["models"]["reconstruction"]["type"] == "others"
    assert {"ood"} == set(info["scoring"]) and {"most_unfamiliar"} == set(info["strategies"])
    assert info["datastore"]["total"] == 4

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
    assert status == 400 and "the uploaded label cannot be used: not a readable image" in body, body
    assert not (tmp_path / "outside").exists() and not (studies.parent / "x").exists()
    assert not list(studies.parent.glob("x*")) and not (tmp_path / "x.png").exists()
