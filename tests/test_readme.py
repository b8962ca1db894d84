"""The README's parameter reference is generated from the configs' field documentation: keep it in sync."""

from pathlib import Path

from stages.core.reference import BEGIN, END, markdown, pipeline_params

README = Path(__file__).resolve().parents[1] / "README.md"


def test_parameter_reference_matches_the_configs():
    text = README.read_text()
    assert BEGIN in text and END in text, "README.md lacks the generated parameter reference"
    current = text[text.index(BEGIN) : text.index(END) + len(END)]
    assert current == markdown(pipeline_params()), (
        "README.md's parameter reference is stale: regenerate it with `python -m stages.core.reference` "
        "and paste it between the markers"
    )


def test_every_params_yaml_key_is_documented():
    import yaml

    params = yaml.safe_load((README.parent / "params.yaml").read_text())
    documented = markdown(pipeline_params())
    flat = []

    def walk(prefix: str, value: object) -> None:
        if isinstance(value, dict) and not prefix.startswith("distill.arms."):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else key, inner)
        else:
            flat.append(prefix)

    walk("", params)
    for name in flat:
        generic = name
        for role in ("teacher", "student"):
            generic = generic.replace(f"builtin.{role}.", "builtin.<role>.")
            if generic.startswith(f"{role}."):
                generic = "<role>." + generic.removeprefix(f"{role}.")
        if generic.startswith("distill.arms."):
            generic = "distill.arms.<arm>.soft_labels"
        assert f"`{generic}`" in documented, f"params.yaml key {name} has no documentation in any config"
