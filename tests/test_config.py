import pytest

from hetsearch.config import TrainRunConfig
from hetsearch.errors import ConfigError
from hetsearch.utils.typed_config import dump_yaml, load_config


def test_stage_configs_load():
    for name in ("gallery", "query_mobilenetv3_small", "query_shufflenetv2_x0_5"):
        cfg = load_config(TrainRunConfig, f"configs/fashion_mnist/{name}.yaml")
        assert cfg.model.embedding_dim == 128


def test_overrides_are_typed_and_nested():
    cfg = load_config(TrainRunConfig, None, ["train.epochs=3", "model.backbone_args={width: 8}",
                                             "train.lr=0.05", "data.max_train_items=100"])
    assert cfg.train.epochs == 3 and cfg.model.backbone_args == {"width": 8}
    assert cfg.train.lr == 0.05 and cfg.data.max_train_items == 100


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) epoch; valid keys: epochs"):
        load_config(TrainRunConfig, None, ["train.epoch=3"])


def test_wrong_types_name_the_field(tmp_path):
    with pytest.raises(ConfigError, match="train.epochs: expected an integer"):
        load_config(TrainRunConfig, None, ["train.epochs=2.5"])
    with pytest.raises(ConfigError, match="runtime.progress: expected true/false"):
        load_config(TrainRunConfig, None, ["runtime.progress=maybe"])
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(TrainRunConfig, None, ["train.epochs"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(TrainRunConfig, bad)


def test_dump_round_trip(tmp_path):
    cfg = load_config(TrainRunConfig, "configs/fashion_mnist/gallery.yaml", ["train.epochs=4"])
    path = tmp_path / "c.yaml"
    path.write_text(dump_yaml(cfg))
    assert load_config(TrainRunConfig, path) == cfg


def test_pipeline_stage_overrides_apply_after_the_pipeline_sections(tmp_path):
    """A stage's runtime.* override (e.g. another seed) takes effect; a data.* one is refused, not dropped."""
    from pathlib import Path

    from hetsearch.stages import PipelineConfig, PipelineContext, StageConfig

    root = Path(__file__).resolve().parents[1] / "configs" / "fashion_mnist"
    cfg = PipelineConfig(base_dir=str(root), output_dir=str(tmp_path))
    cfg.runtime.seed, cfg.runtime.num_threads = 7, 1
    ctx = PipelineContext(cfg=cfg, splits=None, gallery_model=tmp_path / "gallery.pt")
    stage = ctx.stage_config(StageConfig(config="query_mobilenetv3_small.yaml", name="q",
                                         overrides=["runtime.seed=1", "train.epochs=2"]))
    assert stage.runtime.seed == 1 and stage.runtime.num_threads == 1 and stage.train.epochs == 2
    assert ctx.stage_config(StageConfig(config="query_mobilenetv3_small.yaml")).runtime.seed == 7
    with pytest.raises(ConfigError, match=r"data\.image_size=32.*pipeline's data section"):
        ctx.stage_config(StageConfig(config="query_mobilenetv3_small.yaml", name="q",
                                     overrides=["data.image_size=32"]))
