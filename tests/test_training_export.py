"""Feedback → fine-tuning dataset (`teambot feedback export`), the answer scores and model activation.

A temp feedback store is seeded with rated handbook answers, the way the bots record them
(tests/feedback_data.py); the export groups questions with the project's real embedder.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from feedback.store import FeedbackStore
from tests.feedback_data import DOWNVOTED_ONLY, FEEDBACK, render_prompt, seed_feedback
from teambot.cli import app
from core.settings import load_settings
from core import active_model as active
from pipeline.embedders import embedder_spec
from training.export import ExportRefused, export, normalize_question, project_embedder
from training.scores import abstention_rate, citation_compliance, rouge_l, token_f1
from training.scrub import scrub

@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("export")
    # An empty cache: lengths are counted with the char heuristic, whatever was trained before.
    settings = load_settings(
        data_dir=data_dir, cache_dir=data_dir / "cache", train_base_model="gemma3-270m",
        train_max_tokens=512, train_min_examples=10, collection="Handbook",  # the answers' collection: the scope
    )
    store = FeedbackStore.from_settings(settings)
    seed_feedback(store)
    return settings, store


@pytest.fixture(scope="module")
def exported(seeded):
    settings, store = seeded
    return export(settings, store)


def _by_question(examples: list[dict]) -> dict[str, dict]:
    return {e["question"]: e for e in examples}


def _all(exported) -> list[dict]:
    return exported.train + exported.dev + exported.test


def test_export_keeps_upvoted_and_corrected_answers_and_counts_the_rest(exported):
    assert exported.rated == len(FEEDBACK)
    assert dict(exported.dropped) == {
        "downvoted_no_correction": 1 + DOWNVOTED_ONLY, "tie": 1, "no_prompt": 1, "abstention": 1, "not_shown": 1,
        "too_long": 1, "duplicate": 1,
    }
    assert exported.kept == len(FEEDBACK) - 7 - DOWNVOTED_ONLY
    examples = _by_question(_all(exported))
    assert "What is the guest Wi-Fi password?" not in examples  # 👎 without correction
    assert "How many YubiKeys do I get?" not in examples  # tie
    assert "What is our share price today?" not in examples  # an abstention is no answer to learn
    assert "What is the deploy token?" not in examples  # withheld by the guard
    assert "Where is the Lisbon office?" not in examples  # no stored prompt: the chat is unknown
    assert examples["How far ahead should I book a vacation?"]["kind"] == "upvoted"  # changed vote
    assert examples["Can I book a phone booth in the Lisbon office?"]["kind"] == "upvoted"  # 2 to 1
    # The too-long duplicate was dropped before duplicates were merged: the short one stays.
    encryption = examples["Is disk encryption mandatory on laptops?"]["messages"][1]["content"]
    assert encryption.count("Full-disk encryption is mandatory") == 1


def test_examples_are_the_chat_the_model_saw_plus_the_answer_to_learn(exported):
    examples = _by_question(_all(exported))
    upvoted = examples["How do I submit an expense claim?"]["messages"]
    assert upvoted[:-1] == render_prompt("How do I submit an expense claim?", ["ledgerly"])
    assert "Ledgerly within 30 days" in upvoted[1]["content"]  # retrieved context in the user turn
    assert upvoted[-1] == {
        "role": "assistant",
        "content": "Submit the claim in Ledgerly within 30 days of the purchase, with a photo of the receipt [1].",
    }
    corrected = examples["Can I expense a bottle of wine at a team dinner?"]
    assert corrected["kind"] == "corrected"
    assert corrected["messages"][-1]["content"] == "No. Alcohol is not reimbursed [1]."
    majority_down = examples["What should I get done in my first week?"]["messages"][-1]["content"]
    assert majority_down.startswith("Ship one small change")


def test_duplicates_are_merged_within_a_thread_context_only(exported):
    vacation = [e for e in _all(exported) if normalize_question(e["question"]) == "how many vacation days do i get"]
    assert len(vacation) == 1
    assert vacation[0]["messages"][-1]["content"].startswith("You get 28 days")
    follow_ups = [e for e in _all(exported) if e["question"] == "And for part-time staff?"]
    assert len(follow_ups) == 2  # one per thread: the earlier turns differ
    assert {f["messages"][1]["content"] for f in follow_ups} == {
        "How many vacation days do I get?", "How long is parental leave paid in full?",
    }


def test_what_people_typed_and_the_documents_quoted_are_scrubbed(exported):
    text = json.dumps(_all(exported))
    for typed in ("xoxb-", "912 345 678", "4111 1111 1111 1111", "DE89 3704", "10.20.30.40", "<@U04MARIA77>"):
        assert typed not in text, typed
    dinner = next(e for e in _all(exported) if e["question"].startswith("@someone says my card [card]"))
    assert "IBAN [iban] can be reimbursed from [ip]" in dinner["question"]
    # The handbook gives this address: scrubbed in the passage and in the correction that quotes it alike.
    stolen = _by_question(_all(exported))["Who do I tell if my laptop is stolen?"]
    assert stolen["messages"][-1]["content"] == "Report it to [email] within one hour, day or night [1]."
    assert "security@northwind.example" not in text and "stolen laptop to [email] within one hour" in text
    # Facts that look like numbers survive.
    assert "09:00 and 16:00 CET" in text and "45 EUR" in text and "Rua da Prata 120" in text


def test_no_source_document_or_paraphrase_group_is_in_two_splits(seeded, exported):
    from datasets import load_from_disk

    settings, store = seeded
    split_of = {id(e): split for split in ("train", "dev", "test") for e in getattr(exported, split)}
    sizes = {split: len(getattr(exported, split)) for split in ("train", "dev", "test")}
    assert all(sizes.values()) and sizes["test"] >= 0.15 * exported.kept and sizes["dev"] >= 0.15 * exported.kept
    where = {}
    for example in _all(exported):
        for path in example["sources"]:
            where.setdefault(path, set()).add(split_of[id(example)])
    assert all(len(splits) == 1 for splits in where.values()), where
    # Paraphrases by the project's embedder: none across splits, though answered from two pages.
    questions = _all(exported)
    vectors = project_embedder(settings)([e["question"] for e in questions])
    similar = vectors @ vectors.T >= embedder_spec(settings).alike
    for a, b in zip(*similar.nonzero()):
        assert split_of[id(questions[a])] == split_of[id(questions[b])], (questions[a]["question"], questions[b]["question"])
    by_question = _by_question(questions)
    undo = by_question["How can I roll back a service?"]
    assert undo["sources"] == ["handbook/deploys/promotion.html"]
    assert by_question["How do I roll back a service?"]["group"] == undo["group"]

    again = export(settings, store)  # the same data splits the same way
    for split in ("train", "dev", "test"):
        assert [e["question"] for e in getattr(again, split)] == [e["question"] for e in getattr(exported, split)]
    out = exported.out_dir
    lines = (out / "test.jsonl").read_text().splitlines()
    assert len(lines) == len(exported.test)
    first = json.loads(lines[0])
    assert [m["role"] for m in first["messages"]][-2:] == ["user", "assistant"]
    dataset = load_from_disk(str(out / "dataset"))
    assert {k: dataset[k].num_rows for k in ("train", "dev", "test")} == sizes
    assert dataset["test"][0]["messages"] == exported.test[0]["messages"]
    assert json.loads((out / "summary.json").read_text())["kept"] == exported.kept


def test_export_turns_votes_into_preference_pairs_and_kto_examples_in_the_same_splits(exported):
    pref = exported.preference
    pairs = {p["question"]: p for split in ("train", "dev", "test") for p in pref.dpo[split]}
    kto = [row for split in ("train", "dev", "test") for row in pref.kto[split]]
    # 👎 with a correction: chosen = the correction, rejected = what the model said.
    wine = pairs["Can I expense a bottle of wine at a team dinner?"]
    assert wine["chosen"] == [{"role": "assistant", "content": "No. Alcohol is not reimbursed [1]."}]
    assert wine["rejected"][0]["content"] == "Yes, team dinners are reimbursed." and wine["chosen_from"] == "correction"
    assert wine["prompt"] == render_prompt("Can I expense a bottle of wine at a team dinner?", ["not_reimbursed"])
    assert pairs["What should I get done in my first week?"]["rejected"][0]["content"] == "Read the handbook."
    # 👎 without a correction: chosen = the 👍 answer to the same question, an abstention included.
    rotation = pairs["When does the on-call rotation hand over?"]
    assert rotation["rejected"][0]["content"] == "I don't know from the documents I have."
    assert rotation["chosen"][0]["content"].startswith("The rotation hands over every Monday at 10:00 CET")
    assert rotation["chosen_from"].startswith("upvoted:")
    assert len(pairs) == 7 + DOWNVOTED_ONLY  # the 7 corrected answers and the 👎-only ones
    # No pair without a better answer to pair with, from a tie, or from what the user never saw.
    for question in ("What is the guest Wi-Fi password?", "How many YubiKeys do I get?", "What is the deploy token?"):
        assert question not in pairs
    # KTO: every 👍 answer desirable, every 👎 answer undesirable, every correction desirable.
    labelled = {(row["question"], row["completion"][0]["content"]): row["label"] for row in kto}
    assert labelled[("What is the guest Wi-Fi password?", "The password is [secret].")] is False  # scrubbed
    assert labelled[("Can I expense a bottle of wine at a team dinner?", "No. Alcohol is not reimbursed [1].")] is True
    assert labelled[("Can I expense a bottle of wine at a team dinner?", "Yes, team dinners are reimbursed.")] is False
    assert labelled[("When does the on-call rotation hand over?", "I don't know from the documents I have.")] is False
    questions = {q for q, _ in labelled}
    for question in ("How many YubiKeys do I get?", "What is the deploy token?", "What is our share price today?",
                     "Where is the Lisbon office?"):
        assert question not in questions  # tie, withheld, 👍 abstention, no prompt
    assert pref.summary()["kto_undesirable"] == 7 + 1 + DOWNVOTED_ONLY  # corrected, the Wi-Fi one, 👎-only
    # Same groups, same splits: a question's pairs and examples are where its SFT examples are.
    sft_split = {e["question"]: split for split in ("train", "dev", "test") for e in getattr(exported, split)}
    for split in ("train", "dev", "test"):
        for row in pref.dpo[split] + pref.kto[split]:
            assert sft_split.get(row["question"], split) == split, row["question"]
    assert pref.dpo["test"] and pref.dpo["train"] and pref.kto["test"]
    # Written next to the SFT splits, scrubbed like them.
    out = exported.out_dir
    written = "".join((out / method / f"{split}.jsonl").read_text() for method in ("dpo", "kto") for split in ("train", "dev", "test"))
    assert "4111 1111 1111 1111" not in written and "xoxb-123456789012" not in written
    assert json.loads((out / "summary.json").read_text())["preference"]["dpo"] == {s: len(pref.dpo[s]) for s in ("train", "dev", "test")}


def test_export_refuses_below_the_minimum(seeded, exported):
    settings, store = seeded
    with pytest.raises(ExportRefused) as refused:
        export(settings.model_copy(update={"data_dir": settings.data_dir / "other"}), store, min_examples=100)
    assert f"only {exported.kept} usable examples in {exported.groups} groups (need at least 100" in str(refused.value)
    assert not (settings.data_dir / "other" / "sft").exists()


def test_cli_export_prints_a_summary_and_refuses_with_nonzero_exit(tmp_path):
    store = FeedbackStore(f"sqlite:///{tmp_path / 'feedback.db'}")
    seed_feedback(store, FEEDBACK[:6])
    env = {"TEAMBOT_DATA_DIR": str(tmp_path), "TEAMBOT_TRAIN_BASE_MODEL": "gemma3-270m", "TEAMBOT_TRAIN_MIN_EXAMPLES": "20",
           "TEAMBOT_COLLECTION": "Handbook"}
    runner = CliRunner()
    refused = runner.invoke(app, ["feedback", "export"], env=env)
    assert refused.exit_code == 1
    assert "only 6 usable examples in 3 groups (need at least 20" in refused.output
    assert "kept: 6" in refused.output
    done = runner.invoke(app, ["feedback", "export", "--min-examples", "5"], env=env)
    assert done.exit_code == 0, done.output
    assert "kept: 6" in done.output and (tmp_path / "sft" / "test.jsonl").is_file()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Mail jane.doe@northwind.example or call +44 20 7946 0958.", "Mail [email] or call [phone]."),
        ("export SLACK_BOT_TOKEN=xoxb-1111-2222-abcdefghij", "export SLACK_BOT_TOKEN=[secret]"),
        ("key sk-proj-abcdefghijklmnopqrstuv and AKIAABCDEFGHIJKLMNOP", "key [secret] and [secret]"),
        ("api_key: 9f8e7d6c5b4a", "api_key: [secret]"),
        ("Claims over 250 EUR, paid on 2026-11-25 at 10:00, room 4.12", "Claims over 250 EUR, paid on 2026-11-25 at 10:00, room 4.12"),
        ("SLACK_SIGNING_SECRET=8f7e6d5c4b3a and aws_secret_access_key: wJalrXUtnFEMI", "SLACK_SIGNING_SECRET=[secret] and aws_secret_access_key: [secret]"),
        ("db.password = hunter22 but monkey: bananas", "db.password = [secret] but monkey: bananas"),
        ("card 4111-1111-1111-1111, order 4111 1111 1111 1112", "card [card], order 4111 1111 1111 1112"),  # Luhn
        ("pay GB82 WEST 1234 5698 7654 32, not GB00 WEST 1234 5698 7654 32", "pay [iban], not GB00 WEST 1234 5698 7654 32"),  # mod 97
        ("ssh 192.168.1.20 or 2001:db8::8a2e:370:7334; v1.2.3 at 10:00:00, std::vector", "ssh [ip] or [ip]; v1.2.3 at 10:00:00, std::vector"),
        ("ask <@U04MARIA77> or <@!123456789012345678> in <#C024BE7LR>", "ask @someone or @someone in <#C024BE7LR>"),
    ],
)
def test_scrub(text, expected):
    assert scrub(text) == expected


def test_scrub_keeps_what_the_documents_say():
    documents = "Report a lost laptop to security@northwind.example; the VPN gateway is 10.8.0.1."
    typed = "I lost it, mail me at jo@northwind.example; security@northwind.example and 10.8.0.1 or 10.8.0.2?"
    assert scrub(typed, keep=documents) == "I lost it, mail me at [email]; security@northwind.example and 10.8.0.1 or [ip]?"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("call +4915112345678 or +49 15112345678", "call [phone] or [phone]"),  # E.164, no separators
        ("mobile 06 12 34 56 78 or 01.23.45.67.89, abroad +33 6 12 34 56 78", "mobile [phone] or [phone], abroad [phone]"),
        ("mail jürgen.müller@bücher.de or 用户@例子.广告", "mail [email] or [email]"),
        ("xoxc-1234567890-abcdefABCD, xoxp-1234-5678-abcdef, xoxb-1-abcdefgh, xoxa-2-abcdef12",
         "[secret], [secret], [secret], [secret]"),
        ("rotated xoxe.xoxp-1-Mi0yLTEyMzQ1 with xoxe-1-abcdefgh", "rotated [secret] with [secret]"),
        ("posts to https://hooks.slack.com/services/T0123ABCD/B0456EFGH/abcdefghijklmnopqrstuvwx daily",
         "posts to [secret] daily"),
        ("AWS ASIAABCDEFGHIJKLMNOP and AKIAABCDEFGHIJKLMNOP", "AWS [secret] and [secret]"),
        ("bot MTIzNDU2Nzg5MDEyMzQ1Njc4.GaBcDe.abcdefghijklmnopqrstuvwxyz0123456 ok", "bot [secret] ok"),
        ("npm npm_abcdefghijklmnopqrstuvwxyz0123456789 ok", "npm [secret] ok"),
        ("key:\n-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\nq2Vx0s\n\nthanks", "key:\n[secret]\n\nthanks"),  # no END
        ("key: -----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk\nAAAAB3", "key: [secret]"),  # cut off
        ("my password is hunter2, the wifi password is 'blue sky 7'.", "my password is [secret], the wifi password is [secret]."),
        ("Password: abc12 and pw=x9y8 and PWD: hunter", "Password: [secret] and pw=[secret] and PWD: [secret]"),
    ],
)
def test_scrub_catches_what_the_security_review_found(text, expected):
    assert scrub(text) == expected


def test_scrub_leaves_ordinary_text_alone():
    handbook = [
        "You get 25 days of paid leave a year and can carry over up to 5 days.",
        "Upgrade the Slack app to 1.38.10 before 2026-12-03; the sync runs at 10:30 and 14:00:05.",
        "Passwords must be at least 12 characters long; reset yours in the self-service portal.",
        "The password is stored in the vault and the token is rotated every 90 days.",
        "Room 4.12, ext. 4471, a budget of 12 000 EUR, order #20261203, build 2026.12.3, headcount +12%.",
        "Meet on 03/12/2026 or 12.03.2026 from 10:30-11:45; scores were 10 20 30 40 50.",
        "The on-call rota is in Pagerly; ask #it-help or mail the team list.",
    ]
    for sentence in handbook:
        assert scrub(sentence) == sentence


def test_answer_scores():
    reference = "Meals are reimbursed up to 45 EUR per day [1]."
    assert token_f1(reference, reference) == rouge_l(reference, reference) == 1.0
    assert token_f1("Up to 45 EUR per day [2].", reference) == pytest.approx(2 * 1 * (6 / 9) / (1 + 6 / 9))  # all 6 words shared, 6 of 9 recalled
    # Same words, different order: F1 ignores order, ROUGE-L does not.
    shuffled = "day per EUR 45 to up reimbursed are meals"
    assert token_f1(shuffled, reference) == 1.0 and rouge_l(shuffled, reference) < 0.3
    assert token_f1("Ask finance.", reference) == 0.0
    assert citation_compliance(["It is 45 EUR [1].", "45 EUR."], [reference, reference]) == 0.5
    assert citation_compliance(["anything"], ["I don't know."]) is None
    assert abstention_rate(["I don't know from the documents I have.", "45 EUR [1].", ""]) == pytest.approx(2 / 3)


def test_active_model_switches_and_rolls_back(tmp_path):
    settings = load_settings(data_dir=tmp_path)
    assert active.active_model(settings) == settings.model
    assert active.set_active_model(settings, "teambot-ft-a") == settings.model
    active.set_active_model(settings, "teambot-ft-b")
    assert active.active_model(settings) == "teambot-ft-b"
    assert active.rollback(settings) == "teambot-ft-a"
    assert active.active_model(settings) == "teambot-ft-a"
    assert active.rollback(settings) == settings.model
    assert active.active_model(settings) == settings.model
    assert active.rollback(settings) == settings.model  # nothing left: stays on the configured model
    (tmp_path / "active_model.json").write_text("{not json")
    assert active.active_model(settings) == settings.model  # a broken file never breaks answering


def test_cli_publish_rollback_reports_the_active_model(tmp_path):
    settings = load_settings(data_dir=tmp_path)
    active.set_active_model(settings, "teambot-ft-x")
    result = CliRunner().invoke(app, ["publish", "--rollback"], env={"TEAMBOT_DATA_DIR": str(tmp_path)})
    assert result.exit_code == 0, result.output
    assert f"active model: {settings.model}" in result.output
    # No model named any more (TEAMBOT_MODEL rules again); the switch is on the review page's timeline.
    assert "model" not in json.loads((tmp_path / "active_model.json").read_text())
    assert [(e["event"], e["model"]) for e in active.events(settings)] == [
        ("activated", "teambot-ft-x"), ("rolled back", settings.model)]


def test_cli_verbs_explain_what_is_missing(tmp_path):
    env = {"TEAMBOT_DATA_DIR": str(tmp_path)}
    runner = CliRunner()
    missing_run = runner.invoke(app, ["eval", "--run", "nope"], env=env)
    assert missing_run.exit_code == 1 and "no training run 'nope'" in missing_run.output
    no_runs = runner.invoke(app, ["publish", "--run", "latest"], env=env)
    assert no_runs.exit_code == 1 and "run `teambot train` first" in no_runs.output
    no_run = runner.invoke(app, ["publish"], env=env)
    assert no_run.exit_code == 1 and "--run RUN" in no_run.output
    unknown = runner.invoke(app, ["train", "--method", "ppo"], env=env)
    assert unknown.exit_code == 1 and "unknown method 'ppo': use sft, dpo, kto" in unknown.output
    # An export written before preference data existed: SFT trains, DPO says what to do.
    (tmp_path / "sft").mkdir()
    for split in ("train", "dev", "test"):
        (tmp_path / "sft" / f"{split}.jsonl").write_text("")
    no_pairs = runner.invoke(app, ["train", "--method", "dpo"], env=env)
    assert no_pairs.exit_code == 1 and "no exported DPO dataset" in no_pairs.output
    assert "exported before preference data existed" in no_pairs.output and "teambot feedback export" in no_pairs.output


def test_the_gate_judges_preference_runs_by_their_preference_margin():
    """DPO/KTO trade some likelihood of the reference answers for the margin between chosen and
    rejected answers: the gate compares margins for them, losses for SFT runs."""
    from training.evaluate import gate

    def model(loss, margin, score=0.3, cites=1.0, **extra):
        return {"eval_loss": loss, "token_f1": score, "rouge_l": score, "citation_compliance": cites,
                "abstention_rate": 0.0, "preference": {"pairs": 5, "accuracy": 0.8, "margin": margin}, **extra}

    def report(method, candidate, active):
        return {"method": method, "examples": 20, "active_model": "teambot-ft-sft",
                "models": {"base": model(1.7, 2.0), "active": {**active, "scored_as": "adapter"}, "candidate": candidate}}

    sft_active = model(0.8, 19.0)
    # Loss up from the active SFT model, margin up: a preference run passes, an SFT run would not.
    traded = model(1.0, 26.0)
    assert gate(report("dpo", traded, sft_active), 20)["promotable"]
    assert not gate(report("sft", traded, sft_active), 20)["promotable"]
    # Margin below the active model's: refused, with the reason.
    weaker = gate(report("kto", model(0.7, 15.0), sft_active), 20)
    assert not weaker["promotable"] and not weaker["beats_active"]
    assert any("preference margin 15.00 < active 19.00" in r for r in weaker["reasons"])
    # No better than the base's margin: refused even though its loss is lower.
    flat = gate(report("dpo", model(0.9, 2.0), model(1.7, 2.0)), 20)
    assert not flat["beats_base"]
    # Fewer citations than the active model: refused whatever the margin.
    assert not gate(report("dpo", model(1.0, 30.0, cites=0.5), sft_active), 20)["promotable"]


def test_one_process_never_drives_several_gpus_through_data_parallel(monkeypatch, tmp_path):
    """transformers wraps the model in nn.DataParallel when one process sees several GPUs
    (args.n_gpu > 1); `teambot train` keeps it on one and prints the launch command instead."""
    from transformers import TrainingArguments

    from training.distributed import single_process_gpus

    def arguments(visible_gpus: int) -> TrainingArguments:
        args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[], per_device_train_batch_size=4)
        args.device  # noqa: B018 (sets the devices up)
        args._n_gpu = visible_gpus  # what a process seeing that many GPUs is set up with
        return args

    messages = []
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    args = arguments(4)
    assert args.train_batch_size == 16  # DataParallel's batch, before the guard
    single_process_gpus(args, messages.append)
    assert args.n_gpu == 1 and args.train_batch_size == 4
    assert "accelerate launch --num_processes 4" in messages[0]
    single_process_gpus(arguments(1), messages.append)  # one GPU: nothing to say
    assert len(messages) == 1
