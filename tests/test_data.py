import hashlib
import http.server
import threading
from pathlib import Path

import pytest
import torch

from nst_lightning.data.datamodule import FolderDataModule, split_train_val
from nst_lightning.data.datasets import ImageFolderDataset, eval_transform, train_transform, training_images
from nst_lightning.download import download
from nst_lightning.errors import NSTError
from nst_lightning.image import list_images
from nst_lightning.losses.styles import resolve_style_image


def test_training_images_are_recursive_sorted_and_ignore_other_files(image_dir):
    files = training_images(image_dir)
    assert len(files) == 10
    assert files == sorted(files)
    assert {f.suffix for f in files} == {".png", ".jpg", ".webp"}


def test_list_images_recursive_flag(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("b.png", "a.JPG", "notes.txt", "sub/c.webp"):
        (tmp_path / name).write_bytes(b"")
    assert list_images(tmp_path, recursive=False) == [tmp_path / "a.JPG", tmp_path / "b.png"]
    assert list_images(tmp_path, recursive=True) == [tmp_path / "a.JPG", tmp_path / "b.png", tmp_path / "sub/c.webp"]
    assert list_images(tmp_path / "missing", recursive=True) == []


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(NSTError, match="training image folder not found.*data.root"):
        training_images(tmp_path / "nope")


def test_split_holds_out_a_fixed_disjoint_set(image_dir):
    files = training_images(image_dir)
    train, val = split_train_val(files, 3)
    assert len(val) == 3 and len(train) == 7
    assert not set(train) & set(val)
    assert split_train_val(files, 3) == (train, val)


def test_datamodule_batches_random_crops(image_dir):
    dm = FolderDataModule(str(image_dir), image_size=24, batch_size=3, num_workers=0, val_count=2, val_size=20)
    dm.setup("fit")
    torch.manual_seed(0)  # what seed_everything does in training: crops and order follow the seed
    batch = next(iter(dm.train_dataloader()))
    assert batch.shape == (3, 3, 24, 24) and batch.dtype == torch.float32
    assert batch.min() >= 0 and batch.max() <= 1
    torch.manual_seed(0)
    assert torch.equal(next(iter(dm.train_dataloader())), batch)
    val = next(iter(dm.val_dataloader()))
    assert val.shape == (2, 3, 20, 20)


def test_resized_crops_stay_in_the_unit_range():
    """Antialiased resizing overshoots 1.0 by rounding next to saturated pixels (it did in 1 of 6 runs)."""
    image = torch.zeros(3, 45, 53)
    image[:, ::2] = 1.0
    image[:, :, 10:30] = 1.0
    crops, evals = train_transform(24), eval_transform(20)
    for seed in range(40):
        torch.manual_seed(seed)
        crop = crops(image.clone())
        assert crop.min() >= 0 and crop.max() <= 1, seed
    resized = evals(image.clone())
    assert resized.min() >= 0 and resized.max() <= 1


def test_training_order_is_shuffled(image_dir):
    dm = FolderDataModule(str(image_dir), image_size=16, batch_size=1, num_workers=0, val_count=0)
    dm.setup("fit")
    sampler = dm.train_dataloader().sampler
    epoch0 = [index for index, _ in sampler]
    sampler.set_epoch(1)
    epoch1 = [index for index, _ in sampler]
    assert sorted(epoch0) == sorted(epoch1) == list(range(len(dm.train_set)))
    assert epoch0 != sorted(epoch0) and epoch0 != epoch1


def test_corrupt_images_are_skipped_and_counted(image_dir, tmp_path, caplog):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes((image_dir / "img0.png").read_bytes()[:60])
    files = [bad, truncated, *training_images(image_dir)[:3]]
    ds = ImageFolderDataset(files, train_transform(16))
    with caplog.at_level("WARNING"):
        items = [ds[i] for i in range(len(ds))]
    assert all(item.shape == (3, 16, 16) for item in items)
    assert ds.skipped == {bad, truncated}
    assert "2 skipped so far" in caplog.text


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files with HTTP Range support (enough for resume tests)."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        path = Path(self.translate_path(self.path))
        if not path.exists():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        if "Range" in self.headers:
            start = int(self.headers["Range"].split("=")[1].split("-")[0])
            self.send_response(206)
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def file_server(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    handler = lambda *a, **k: _RangeHandler(*a, directory=str(served), **k)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_download_resumes_and_verifies_checksum(file_server, tmp_path):
    served, base = file_server
    payload = bytes(range(256)) * 4000
    (served / "blob.bin").write_bytes(payload)
    digest = hashlib.sha256(payload).hexdigest()
    dest = tmp_path / "out" / "blob.bin"
    dest.parent.mkdir()
    (dest.parent / "blob.bin.part").write_bytes(payload[:1000])  # an interrupted earlier download
    assert download(f"{base}/blob.bin", dest, checksum=digest, progress=False) == dest
    assert dest.read_bytes() == payload
    assert not (dest.parent / "blob.bin.part").exists()


def test_download_rejects_a_bad_checksum(file_server, tmp_path):
    served, base = file_server
    (served / "blob.bin").write_bytes(b"abc")
    with pytest.raises(NSTError, match="checksum mismatch"):
        download(f"{base}/blob.bin", tmp_path / "blob.bin", checksum="0" * 64, progress=False)
    assert not (tmp_path / "blob.bin").exists()


def test_offline_style_download_says_where_to_put_the_file(tmp_path):
    dest = tmp_path / "styles" / "starry_night.jpg"
    with pytest.raises(NSTError, match=r"Copy the file to .*starry_night.jpg"):
        resolve_style_image(str(dest), "http://127.0.0.1:9/starry_night.jpg", "0" * 64)


def test_user_style_image_must_exist(tmp_path):
    with pytest.raises(NSTError, match="style image not found"):
        resolve_style_image(str(tmp_path / "mine.jpg"))


def test_empty_root_downloads_the_manifest_photos(file_server, tmp_path, image_dir, monkeypatch):
    from nst_lightning.data import manifest as manifest_mod

    served, base = file_server
    rows = ["relative_path\tsource_repo\tsource_path\tsource_commit\tsha256\traw_url"]
    for src in training_images(image_dir)[:4]:
        (served / src.name).write_bytes(src.read_bytes())
        # Training rows list the resized copy's hash, which the original need not match.
        rows.append(f"train/{src.stem}.jpg\tr\tp\tc\t{'0' * 64}\t{base}/{src.name}")
    rows.append(f"styles/other.jpg\tr\tp\tc\t{'0' * 64}\t{base}/missing.jpg")
    manifest = tmp_path / "manifest.tsv"
    manifest.write_text("\n".join(rows) + "\n")
    monkeypatch.setattr(manifest_mod, "MANIFEST", manifest)
    root = tmp_path / "data" / "train"
    dm = FolderDataModule(
        str(root), image_size=16, batch_size=2, num_workers=0, val_count=1, manifest_prefix="train/", download=True
    )
    dm.prepare_data()
    dm.setup("fit")
    assert len(training_images(root)) == 4
    assert {p.suffix for p in training_images(root)} == {p.suffix for p in training_images(image_dir)[:4]}


def test_offline_manifest_download_points_to_nst_data_dir(tmp_path):
    from nst_lightning.data.manifest import download_folder

    manifest = tmp_path / "m.tsv"
    manifest.write_text(
        "relative_path\tsource_repo\tsource_path\tsource_commit\tsha256\traw_url\n"
        f"train/a.jpg\tr\tp\tc\t{'0' * 64}\thttp://127.0.0.1:9/a.jpg\n"
    )
    with pytest.raises(NSTError, match="NST_DATA_DIR"):
        download_folder("train/", tmp_path / "train", manifest, progress=False)


def test_shipped_manifest_covers_every_style_preset():
    from nst_lightning.cli.presets import load_option, preset_names
    from nst_lightning.data.manifest import read_manifest

    entries = {e.relative_path: e for e in read_manifest()}
    assert sum(p.startswith("train/") for p in entries) == 704
    for preset in preset_names():
        cfg = load_option("style", preset)
        if cfg.file:
            entry = entries[f"styles/{cfg.file}"]
            assert (entry.url, entry.sha256) == (cfg.url, cfg.sha256)
