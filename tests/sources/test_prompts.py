import pytest

from stages.core.config import build
from stages.core.errors import InputError
from stages.sources.prompts import PromptConfig, format_prompt


def test_default_prompt_letters_by_position():
    prompt = format_prompt("Which is a fruit?", ["stone", "apple", "cloud"])
    assert prompt == "Which is a fruit?\nA. stone\nB. apple\nC. cloud\nAnswer:"


def test_custom_option_format_and_digest_changes():
    config = PromptConfig(template="Q: {question}\n{options}\nA:", option_format="({letter}) {text}")
    assert format_prompt("q", ["x", "y"], config) == "Q: q\n(A) x\n(B) y\nA:"
    assert config.digest != PromptConfig().digest
    assert PromptConfig().digest == PromptConfig().digest


@pytest.mark.parametrize("n_choices", [1, 27])
def test_choice_count_out_of_range(n_choices):
    with pytest.raises(InputError, match=r"2\.\.26 choices"):
        format_prompt("q", ["x"] * n_choices)


def test_template_must_hold_fields():
    with pytest.raises(InputError, match=r"^params\.yaml: prompt\.template must contain \{options\}"):
        PromptConfig(template="{question} Answer:")
    with pytest.raises(InputError, match=r"^params\.yaml: prompt\.option_format must contain \{letter\}"):
        PromptConfig(option_format="{text}")
    with pytest.raises(
        InputError, match=r"^params\.yaml: prompt\.typo is not a parameter; prompt has: template, option_"
    ):
        build(
            PromptConfig, {"template": "{question}{options}", "option_format": "{letter} {text}", "typo": 1}, "prompt"
        )


def test_prompt_config_from_params_mapping():
    values = {
        "template": "Q: {question}\n{options}\nA:",
        "option_format": "({letter}) {text}",
        "cloze_template": "{question}",
        "on_too_long": "truncate",
        "chat_template": False,
        "shots": 0,
    }
    assert build(PromptConfig, values, "prompt") == PromptConfig(**values)
    with pytest.raises(
        InputError, match=r"^params\.yaml: prompt\.on_too_long='cut' must be one of error, skip, truncate$"
    ):
        build(PromptConfig, {**values, "on_too_long": "cut"}, "prompt")
    with pytest.raises(InputError, match=r"^params\.yaml: prompt\.option_format is missing"):
        build(PromptConfig, {"template": values["template"]}, "prompt")
    with pytest.raises(InputError, match=r"^params\.yaml: prompt\.cloze_template is missing \(The cloze readout"):
        build(PromptConfig, {key: values[key] for key in ("template", "option_format")}, "prompt")
    for template in ("Q: {question}\n{options}\nA:", "Answer:"):
        with pytest.raises(InputError, match=r"prompt\.cloze_template must contain \{question\} and not \{options\}"):
            PromptConfig(cloze_template=template)


def test_prompts_longer_than_the_positions_name_the_longest_example():
    from types import SimpleNamespace

    from stages.sources.prompts import check_prompts_fit

    config = SimpleNamespace(max_position_embeddings=8)
    check_prompts_fit([3, 8, 5], ["a", "b", "c"], config, "student")  # fits exactly
    check_prompts_fit([300], ["a"], SimpleNamespace(), "student")  # no limit known: nothing to check
    with pytest.raises(InputError, match="example c: its prompt has 11 student tokens, more than the student's 8"):
        check_prompts_fit([3, 9, 11], ["a", "b", "c"], config, "student")
