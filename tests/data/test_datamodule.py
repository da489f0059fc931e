"""ClipSampler (DDP split, epochs, seeds), ClipDataModule with a real Lightning Trainer, Hydra data configs."""

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from tests.helpers.stores import make_segment
from detector import CONFIG_DIR
from detector.data.batch import ClipBatch, FrameBatch
from detector.data.clips import ClipDataset
from detector.data.datamodule import ClipDataModule
from detector.data.frame_store import FrameStoreError
from detector.data.sampler import ClipSampler


class _Sized:
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n


@pytest.mark.parametrize("n,replicas", [(10, 3), (9, 3), (2, 4), (7, 1)])
def test_sampler_pads_to_equal_whole_clip_counts(n, replicas):
    parts = [list(ClipSampler(_Sized(n), shuffle=True, seed=3, num_replicas=replicas, rank=r))
             for r in range(replicas)]
    assert len({len(p) for p in parts}) == 1
    assert len(parts[0]) == len(ClipSampler(_Sized(n), num_replicas=replicas, rank=0))
    flat = [i for p in parts for i in p]
    assert set(flat) == set(range(n))  # every clip seen
    assert len(flat) - n < replicas  # at most R-1 repeats


def test_sampler_drop_last_gives_disjoint_ranks():
    parts = [set(ClipSampler(_Sized(11), shuffle=True, seed=0, num_replicas=3, rank=r, drop_last=True))
             for r in range(3)]
    assert [len(p) for p in parts] == [3, 3, 3]
    assert not (parts[0] & parts[1]) and not (parts[1] & parts[2]) and not (parts[0] & parts[2])
    with pytest.raises(ValueError, match="drop_last"):
        ClipSampler(_Sized(2), num_replicas=3, rank=0, drop_last=True)


def test_sampler_epochs_and_seeds_are_deterministic():
    s = ClipSampler(_Sized(50), shuffle=True, seed=1, num_replicas=2, rank=1)
    e0 = list(s)
    assert list(s) == e0
    s.set_epoch(1)
    e1 = list(s)
    assert e1 != e0 and sorted(e1) != e1
    other = ClipSampler(_Sized(50), shuffle=True, seed=1, num_replicas=2, rank=1)
    other.set_epoch(1)
    assert list(other) == e1
    assert list(ClipSampler(_Sized(50), shuffle=True, seed=2, num_replicas=2, rank=1)) != e0
    assert list(ClipSampler(_Sized(5), shuffle=False, num_replicas=2, rank=0)) == [0, 2, 4]
    assert list(ClipSampler(_Sized(5), shuffle=False, num_replicas=2, rank=1)) == [1, 3, 0]


@pytest.fixture()
def store(tmp_path):
    for k in range(3):
        make_segment(tmp_path, "training", f"train{k}", 6 + k, seed=k, num_points=40)
    make_segment(tmp_path, "validation", "valA", 4, seed=10, num_points=40)
    make_segment(tmp_path, "validation", "valB", 3, seed=11, num_points=40, gaps_before=(2,))
    return tmp_path


def test_datamodule_loaders_standalone(store):
    dm = ClipDataModule(store, clip_length=3, batch_size=2, num_workers=2, augment={"rotation": 0.2},
                        point_range=[-30, -30, -3, 30, 30, 4])
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    n_clips = len(dm.train_set)
    assert n_clips == len(ClipDataset(store, "training", clip_length=3))
    assert len(batches) == (n_clips + 1) // 2
    assert all(isinstance(b, ClipBatch) and len(b) == 3 for b in batches)
    assert sum(b.batch_size for b in batches) == n_clips
    assert all(b.frames[0].reset.all() for b in batches)
    stream = list(dm.val_dataloader())
    assert all(isinstance(fb, FrameBatch) and fb.batch_size == 1 for fb in stream)
    assert [(fb.segments[0], fb.indices[0], bool(fb.reset[0])) for fb in stream] == [
        ("valA", 0, True), ("valA", 1, False), ("valA", 2, False), ("valA", 3, False),
        ("valB", 0, True), ("valB", 1, False), ("valB", 2, True)]
    assert len(list(dm.test_dataloader())) == 7


def test_datamodule_clear_errors(tmp_path):
    make_segment(tmp_path, "training", "t", 5, seed=0, num_points=10)
    (tmp_path / "validation").mkdir()
    dm = ClipDataModule(tmp_path, clip_length=2)
    with pytest.raises(FrameStoreError, match=r"validation.*no complete segments"):
        dm.setup("fit")
    with pytest.raises(FrameStoreError, match="testing"):
        ClipDataModule(tmp_path, test_split="testing").setup("test")


class _Recorder(L.LightningModule):
    """Sees what the Trainer feeds it: train clips per epoch, validation frames in order."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.train_seen, self.val_seen, self.sampler_types = {}, [], set()

    def training_step(self, batch, batch_idx):
        assert isinstance(batch, ClipBatch)
        self.sampler_types.add(type(self.trainer.train_dataloader.sampler).__name__)
        self.train_seen.setdefault(self.current_epoch, []).extend(
            (s, i) for s, i in zip(batch.frames[0].segments, batch.frames[0].indices))
        return self.w * batch.frames[-1].points[:, 1:4].mean()

    def validation_step(self, batch, batch_idx):
        assert isinstance(batch, FrameBatch)
        self.val_seen.append((batch.segments[0], batch.indices[0], bool(batch.reset[0])))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_trainer_keeps_clip_sampler_and_sets_epochs(store):
    dm = ClipDataModule(store, clip_length=2, stride=1, batch_size=2, augment={"flip_prob": 0.5})
    model = _Recorder()
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=2, use_distributed_sampler=False, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0)
    trainer.fit(model, datamodule=dm)
    assert model.sampler_types == {"ClipSampler"}
    e0, e1 = model.train_seen[0], model.train_seen[1]
    assert len(e0) == len(e1) == len(dm.train_set) == 18
    assert sorted(e0) == sorted(e1) and e0 != e1  # same clips, new order each epoch
    assert len(model.val_seen) == 2 * 7 and model.val_seen[:7] == model.val_seen[7:]
    assert [v[:2] for v in model.val_seen[:7]] == [("valA", i) for i in range(4)] + [("valB", i) for i in range(3)]


def test_hydra_data_configs_instantiate(store):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        syn = compose(overrides=["+data=synthetic", "+paths.data_root=/somewhere"])
        assert syn.data.root == "/somewhere/synthetic"
        syn = compose(overrides=["+data=synthetic", f"data.root={store}", "data.num_workers=0",
                                 "data.persistent_workers=false"])
        way = compose(overrides=["+data=waymo", f"data.root={store}", "data.augment.enabled=false"])
    dm = instantiate(syn.data)
    assert isinstance(dm, ClipDataModule)
    assert dm.clip_length == 4 and dm.batch_size == 2 and dm.point_range == [-40, -40, -3, 40, 40, 4]
    assert dm.augment is not None and dm.augment.scale == (0.95, 1.05)
    batch = next(iter(dm.train_dataloader()))
    assert len(batch) == 4 and batch.batch_size == 2
    wdm = instantiate(way.data)
    assert wdm.augment is None and wdm.point_range == [-75.2, -75.2, -3.0, 75.2, 75.2, 4.0]
    assert wdm.splits["predict"] == "testing"


@pytest.mark.slow
def test_ddp_two_processes_get_disjoint_whole_clips(store, tmp_path):
    """Real DDP on CPU (gloo, 2 processes): equal clip counts, drop_last makes them disjoint; validation
    streams whole segments, each on one rank."""
    out = tmp_path / "seen"
    out.mkdir()
    dm = ClipDataModule(store, clip_length=2, stride=1, batch_size=1, drop_last=True)
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", max_epochs=1,
                        use_distributed_sampler=False, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(_DumpingRecorder(str(out)), datamodule=dm)
    seen = [(out / f"rank{r}.txt").read_text().split() for r in range(2)]
    assert len(seen[0]) == len(seen[1]) == 9
    assert not set(seen[0]) & set(seen[1])
    val = [(out / f"val{r}.txt").read_text().split() for r in range(2)]
    assert sorted(val[0] + val[1]) == sorted([f"valA:{i}" for i in range(4)] + [f"valB:{i}" for i in range(3)])
    assert {v.split(":")[0] for v in val[0]}.isdisjoint({v.split(":")[0] for v in val[1]})


class _DumpingRecorder(_Recorder):
    def __init__(self, out):
        super().__init__()
        self.out = out

    def on_train_epoch_end(self):
        with open(f"{self.out}/rank{self.global_rank}.txt", "w") as f:
            f.write(" ".join(f"{s}:{i}" for s, i in self.train_seen[0]))

    def on_validation_epoch_end(self):
        with open(f"{self.out}/val{self.global_rank}.txt", "w") as f:
            f.write(" ".join(f"{s}:{i}" for s, i, _ in self.val_seen))


def test_training_batches_independent_of_worker_count(store):
    def epoch_batches(workers, epoch):
        dm = ClipDataModule(store, clip_length=2, stride=1, batch_size=3, num_workers=workers, seed=5,
                            augment={"translate_std": [0.3, 0.3, 0.0]})
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(epoch)
        return [(b.frames[0].segments, b.frames[0].indices, b.frames[1].points, b.frames[1].poses) for b in loader]

    a, b = epoch_batches(0, 1), epoch_batches(2, 1)
    assert len(a) == len(b) == 6
    for x, y in zip(a, b):
        assert x[0] == y[0] and x[1] == y[1]
        assert torch.equal(x[2], y[2]) and torch.equal(x[3], y[3])
    c = epoch_batches(0, 2)
    assert [x[:2] for x in c] != [x[:2] for x in a]
    assert list(ClipSampler(_Sized(3), shuffle=False, with_epoch=True)) == [(0, 0), (1, 0), (2, 0)]


def test_streamed_splits_keep_boxes_outside_range_training_drops_them(store):
    rng = [-8, -8, -3, 8, 8, 4]
    dm = ClipDataModule(store, clip_length=2, batch_size=1, point_range=rng)
    train_boxes = torch.cat([fb.boxes for b in dm.train_dataloader() for fb in b.frames])
    assert len(train_boxes) and (train_boxes[:, 1:3].abs() <= 8).all()
    val_boxes = torch.cat([fb.boxes for fb in dm.val_dataloader()])
    assert (val_boxes[:, 1:3].abs() > 8).any()
    val_types = torch.cat([fb.types for fb in dm.val_dataloader()])
    assert set(val_types.tolist()) == {1, 2, 4}
    strict = ClipDataModule(store, point_range=rng, eval_keep_boxes_outside_range=False)
    assert all((fb.boxes[:, 1:3].abs() <= 8).all() for fb in strict.val_dataloader())
