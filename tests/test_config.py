"""Config loading: YAML recipes, `--set` overrides, and one-line errors for every mistake."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from smolgrpo.config.loading import load_config
from smolgrpo.config.schema import Config
from smolgrpo.errors import SmolGRPOError

RECIPES = sorted((Path(__file__).parents[1] / "recipes").glob("*.yaml"))


def write_yaml(tmp_path: Path, data, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def test_defaults_validate():
    config = load_config(None)
    assert config.to_dict() == Config().to_dict()
    assert Config().validate() is not None
    assert config.grpo.loss_type == "dapo"
    assert config.grpo.beta == 0.0
    assert config.sampling.num_generations == 8


def test_load_yaml_file(tmp_path):
    path = write_yaml(
        tmp_path,
        {
            "model": {"name": "some/model", "lora": True, "lora_rank": 4},
            "optim": {"learning_rate": 3.0e-4, "max_steps": 7},
            "rewards": {"weights": {"correctness": 1.0, "strict_format": 0.5}},
            "run": {"output_dir": str(tmp_path / "out")},
        },
    )
    config = load_config(path)
    assert config.model.name == "some/model"
    assert config.model.lora is True
    assert config.model.lora_rank == 4
    assert config.optim.learning_rate == pytest.approx(3e-4)
    assert config.optim.max_steps == 7
    assert config.rewards.weights == {"correctness": 1.0, "strict_format": 0.5}
    assert config.run.output_dir == str(tmp_path / "out")
    # untouched keys keep their defaults
    assert config.optim.micro_batch_size == Config().optim.micro_batch_size


def test_empty_yaml_file_gives_defaults(tmp_path):
    assert load_config(write_yaml(tmp_path, "")).to_dict() == Config().to_dict()


def test_overrides_parse_types(tmp_path):
    path = write_yaml(tmp_path, {"optim": {"learning_rate": 1.0e-3, "max_steps": 5}})
    config = load_config(
        path,
        [
            "optim.learning_rate=1e-5",  # YAML 1.1 reads this as a string; must become a float
            "optim.max_steps=12",
            "data.source=null",
            "grpo.epsilon_high=null",
            "model.lora=true",
            "model.lora_target_modules=[q_proj, v_proj]",
            "rewards.weights={correctness: 2}",
            "prompt.prefill=''",
        ],
    )
    assert isinstance(config.optim.learning_rate, float)
    assert config.optim.learning_rate == pytest.approx(1e-5)
    assert config.optim.max_steps == 12 and isinstance(config.optim.max_steps, int)
    assert config.data.source is None
    assert config.grpo.epsilon_high is None
    assert config.model.lora is True
    assert config.model.lora_target_modules == ["q_proj", "v_proj"]
    assert config.rewards.weights == {"correctness": 2}
    assert config.prompt.prefill == ""


def test_override_without_file_and_value_with_equals():
    config = load_config(None, ["prompt.system_prompt=a=b", "run.seed=3"])
    assert config.prompt.system_prompt == "a=b"
    assert config.run.seed == 3


@pytest.mark.parametrize("override", ["optim", "learning_rate=1", "optim.learning_rate"])
def test_malformed_override(override):
    with pytest.raises(SmolGRPOError, match="section.key=value"):
        load_config(None, [override])


def test_unknown_key_names_it_and_lists_valid_keys():
    with pytest.raises(SmolGRPOError) as error:
        load_config(None, ["optim.lr=1e-5"])
    message = str(error.value)
    assert "optim.lr" in message
    assert "learning_rate" in message and "max_steps" in message
    assert "\n" not in message


def test_unknown_key_in_file_names_file(tmp_path):
    path = write_yaml(tmp_path, {"sampling": {"num_gens": 4}})
    with pytest.raises(SmolGRPOError, match="sampling.num_gens") as error:
        load_config(path)
    assert str(path) in str(error.value)
    assert "num_generations" in str(error.value)


def test_unknown_section(tmp_path):
    path = write_yaml(tmp_path, {"optimizer": {"learning_rate": 1e-5}})
    with pytest.raises(SmolGRPOError, match="unknown section 'optimizer'") as error:
        load_config(path)
    assert "optim" in str(error.value) and "sampling" in str(error.value)


def test_section_must_be_mapping(tmp_path):
    with pytest.raises(SmolGRPOError, match="optim"):
        load_config(write_yaml(tmp_path, "optim: 3\n"))
    with pytest.raises(SmolGRPOError, match="top level"):
        load_config(write_yaml(tmp_path, "- a\n- b\n"))


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ('model.lora="yes"', "model.lora"),
        ("model.lora=1", "model.lora"),
        ("optim.max_steps=2.5", "optim.max_steps"),
        ("optim.max_steps=true", "optim.max_steps"),
        ("optim.learning_rate=fast", "optim.learning_rate"),
        ("optim.learning_rate=null", "optim.learning_rate"),
        ("model.lora_target_modules=q_proj", "model.lora_target_modules"),
        ("rewards.weights=[correctness]", "rewards.weights"),
        ("sampling.num_generations=[4]", "sampling.num_generations"),
    ],
)
def test_wrong_type(override, key):
    with pytest.raises(SmolGRPOError, match=key.replace(".", r"\.")):
        load_config(None, [override])


def test_wrong_type_in_yaml_file(tmp_path):
    path = write_yaml(tmp_path, 'model:\n  lora: "yes"\n')
    with pytest.raises(SmolGRPOError, match=r"model\.lora") as error:
        load_config(path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("optim.learning_rate=-1e-5", "optim.learning_rate"),
        ("optim.learning_rate=0", "optim.learning_rate"),
        ("optim.max_steps=0", "optim.max_steps"),
        ("optim.micro_batch_size=0", "optim.micro_batch_size"),
        ("optim.lr_schedule=linear", "optim.lr_schedule"),
        ("sampling.num_generations=1", "sampling.num_generations"),
        ("sampling.temperature=0", "sampling.temperature"),
        ("sampling.top_p=1.5", "sampling.top_p"),
        ("grpo.epsilon=0", "grpo.epsilon"),
        ("grpo.epsilon_high=-0.1", "grpo.epsilon_high"),
        ("grpo.beta=-0.01", "grpo.beta"),
        ("grpo.loss_type=ppo", "grpo.loss_type"),
        ("grpo.scale_rewards=std", "grpo.scale_rewards"),
        ("grpo.num_iterations=0", "grpo.num_iterations"),
        ("grpo.max_refill_rounds=-1", "grpo.max_refill_rounds"),
        ("model.dtype=int8", "model.dtype"),
        ("model.lora_rank=0", "model.lora_rank"),
        ("run.save_every=0", "run.save_every"),
        ("run.keep_checkpoints=0", "run.keep_checkpoints"),
        ("run.log_samples_every=0", "run.log_samples_every"),
        ("rewards.weights={correctness: 0}", "rewards.weights"),
        ("rewards.weights={correctness: true}", "rewards.weights.correctness"),
    ],
)
def test_out_of_range(override, key):
    with pytest.raises(SmolGRPOError, match=f"invalid value for '{key}'") as error:
        load_config(None, [override])
    assert "(must be " in str(error.value)  # every range check says what is allowed


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "sampling.num_generations=0",
            "config: invalid value for 'sampling.num_generations': 0 (must be >= 2)",
        ),
        (
            "sampling.top_p=1.5",
            "config: invalid value for 'sampling.top_p': 1.5 (must be in (0, 1])",
        ),
        (
            "grpo.loss_type=ppo",
            "config: invalid value for 'grpo.loss_type': 'ppo' (must be one of grpo, bnpo, dapo, "
            "dr_grpo)",
        ),
        ("run.eval_every=-1", "config: invalid value for 'run.eval_every': -1 (must be >= 0"),
    ],
)
def test_out_of_range_says_the_allowed_range(override, message):
    with pytest.raises(SmolGRPOError) as error:
        load_config(None, [override])
    assert str(error.value).startswith(message)


def test_set_errors_blame_the_set_not_the_recipe(tmp_path):
    path = write_yaml(tmp_path, {"optim": {"max_steps": 3}})
    for override, expected in [
        ("optim.max_step=5", "--set optim.max_step: unknown key 'optim.max_step' (valid: "),
        ("optim.max_steps=ten", "--set optim.max_steps: 'optim.max_steps' should be int"),
        ("optimizer.max_steps=5", "--set optimizer.max_steps: unknown section 'optimizer'"),
    ]:
        with pytest.raises(SmolGRPOError) as error:
            load_config(path, [override])
        assert str(error.value).startswith(expected), str(error.value)
        assert str(path) not in str(error.value)
    bad = write_yaml(tmp_path, {"optim": {"max_step": 3}}, "bad.yaml")  # the file's own error
    with pytest.raises(SmolGRPOError) as error:
        load_config(bad, ["optim.max_steps=5"])
    assert str(error.value).startswith(f"{bad}: unknown key 'optim.max_step'")


def test_set_one_entry_of_a_mapping(tmp_path):
    path = write_yaml(
        tmp_path, {"rewards": {"weights": {"correctness": 2.0, "strict_format": 0.5}}}
    )
    config = load_config(
        path,
        [
            "rewards.overlong_buffer=50",
            "rewards.weights.overlong_penalty=1.0",
            "rewards.weights.correctness=3",
        ],
    )
    assert config.rewards.weights == {
        "correctness": 3,
        "strict_format": 0.5,
        "overlong_penalty": 1.0,
    }
    # No mapping in the recipe to add to (the task's defaults would be dropped): one line.
    with pytest.raises(SmolGRPOError) as error:
        load_config(None, ["rewards.weights.correctness=1.0"])
    assert str(error.value).startswith(
        "--set 'rewards.weights.correctness=1.0': the recipe gives no mapping 'rewards.weights'"
    )
    # An unknown reward added this way is blamed on the --set, not on the recipe file.
    with pytest.raises(SmolGRPOError) as error:
        load_config(path, ["rewards.weights.brevity=0.5"])
    assert "brevity" in str(error.value)
    assert str(path) not in str(error.value)


def test_unknown_reward_name():
    with pytest.raises(SmolGRPOError) as error:
        load_config(None, ["rewards.weights={correctness: 1.0, brevity: 0.5}"])
    message = str(error.value)
    assert "brevity" in message
    assert "correctness" in message and "strict_format" in message


def test_missing_recipe_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(SmolGRPOError, match="not found") as error:
        load_config(missing)
    assert str(missing) in str(error.value)


def test_invalid_yaml_names_file_and_line(tmp_path):
    path = write_yaml(tmp_path, "optim:\n  learning_rate: [1e-5\n  max_steps: 3\n", "broken.yaml")
    with pytest.raises(SmolGRPOError, match="invalid YAML") as error:
        load_config(path)
    message = str(error.value)
    assert str(path) in message
    assert f"{path}:" in message  # followed by a line number
    assert message.split(f"{path}:", 1)[1].split(":", 1)[0].isdigit()


def test_save_and_load_round_trip(tmp_path):
    config = load_config(
        None,
        [
            "optim.learning_rate=1e-5",
            "model.lora=true",
            "model.lora_target_modules=[q_proj]",
            "grpo.epsilon_high=null",
            "rewards.weights={correctness: 1.5, soft_format: 0.25}",
            "prompt.system_prompt='multi\nline: with # and \"quotes\"'",
            "data.source=/data/gsm8k",
        ],
    )
    path = tmp_path / "config.yaml"
    config.save(path)
    loaded = load_config(path)
    assert loaded.to_dict() == config.to_dict()
    assert loaded == config


def test_saved_default_config_round_trips(tmp_path):
    path = tmp_path / "config.yaml"
    Config().save(path)
    assert load_config(path).to_dict() == Config().to_dict()


@pytest.mark.skipif(not RECIPES, reason="no recipes/*.yaml")
@pytest.mark.parametrize("recipe", RECIPES, ids=[p.name for p in RECIPES])
def test_recipes_validate(recipe):
    config = load_config(recipe)
    assert config.optim.max_steps >= 1
    assert config.run.output_dir
