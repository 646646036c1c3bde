"""Question set for the learning-loop benchmark, generated from the PostgreSQL 15 documentation.

    python -m bench.loop_questions

The corpus is Debian's `postgresql-doc-15` HTML: the SQL command and client/server program
reference pages, the configuration chapters (runtime-config-*), the function tables (functions-*)
and the error code appendix. Questions come from four kinds of documented entry, each parsed from
the markup: configuration parameters (`<dt id="GUC-…">` and the first paragraph of its `<dd>`),
functions (rows of the function tables: the `<code class="function">` of the signature and the
description paragraph), command-line options of the programs (`<dt>` with `<code class="option">`)
and SQLSTATE codes. Entries with a description under six words or that only point elsewhere
("See …", "obsolete") are skipped; a subject is kept once (first page wins). A function named in
the tables of two pages, or whose overloads do different things (`point`), is dropped: its question
would have two right answers. An option another program already documents in much the same words
(--host, --no-owner) is kept once, or a held-out question would repeat a training one.

Each subject is asked in up to three forms: `direct` names it ("What does the `work_mem` setting
control?"), `paraphrase` names it in other words (one of several templates, chosen by a hash of
the subject), `task` describes the problem from the first clause of its description without
naming it ("Which configuration parameter sets the base maximum amount of memory …?"). Subjects
are taken in hash order until each kind holds its share of the set (SHARES). Unanswerable
questions look like the others but the pages cannot answer them: invented parameter, function and
option names (each checked absent from every page of the documentation), other database
products, and facts only the team knows.

The gold answer is the description's first one or two sentences; `key_terms` are the rarest words
of its first sentence (by document frequency over the set's gold answers) that the question does
not contain; for a `task` question, the subject's own name and one such word. split() keeps each
page family (topic) whole on one side, so nothing held out was asked, voted on or paraphrased in
training.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from html.parser import HTMLParser
from pathlib import Path

DOCS = Path("/usr/share/doc/postgresql-doc-15/html")
KINDS = ("parameter", "function", "option", "errcode", "unanswerable")
FORMS = ("direct", "paraphrase", "task")
TOTAL = 800  # the answerable kinds fill SHARES of it; the unanswerable questions are the other tenth
SHARES = {"parameter": 0.40, "function": 0.25, "option": 0.20, "errcode": 0.05}
MIN_WORDS = 6
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source", "wbr"}


def _h(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


# --- HTML -----------------------------------------------------------------------------------------

@dataclass
class _Node:
    tag: str
    attrs: dict
    children: list = field(default_factory=list)

    def cls(self) -> str:
        return self.attrs.get("class") or ""

    def elements(self) -> list[_Node]:
        return [c for c in self.children if isinstance(c, _Node)]

    def iter(self, tag: str | None = None, cls: str | None = None):
        for child in self.elements():
            if (tag is None or child.tag == tag) and (cls is None or cls in child.cls().split()):
                yield child
            yield from child.iter(tag, cls)

    def find(self, tag: str | None = None, cls: str | None = None) -> _Node | None:
        return next(self.iter(tag, cls), None)

    def text(self) -> str:
        inner = _clean("".join(c if isinstance(c, str) else c.text() for c in self.children))
        return "^" + inner if self.tag == "sup" else inner  # "1024^2", not "10242"


class _Tree(HTMLParser):
    """Just enough of a DOM: the pages are DocBook XHTML, but an unclosed tag must not lose the rest."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = _Node("#root", {})
        self.stack = [self.root]

    def handle_starttag(self, tag, attrs):
        node = _Node(tag, dict(attrs))
        self.stack[-1].children.append(node)
        if tag not in _VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag, attrs):
        self.stack[-1].children.append(_Node(tag, dict(attrs)))

    def handle_endtag(self, tag):
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def handle_data(self, data):
        self.stack[-1].children.append(data)


def _parse(path: Path) -> _Node:
    tree = _Tree()
    tree.feed(path.read_text(encoding="utf-8", errors="replace"))
    tree.close()
    return tree.root


def _clean(text: str) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r"\s+([.,;:)])", r"\1", text)  # "value ." left by a line break before the stop
    return re.sub(r"\(\s+", "(", text)


def _next_element(parent: _Node, node: _Node) -> _Node | None:
    elements = parent.elements()
    i = next(i for i, e in enumerate(elements) if e is node)
    return elements[i + 1] if i + 1 < len(elements) else None


def _pairs(root: _Node):
    """(dt, dd) of every definition list, nested ones included."""
    for dl in root.iter("dl"):
        for dt in dl.elements():
            if dt.tag == "dt":
                dd = _next_element(dl, dt)
                if dd is not None and dd.tag == "dd":
                    yield dt, dd


def _first_paragraph(node: _Node) -> str:
    p = node.find("p")
    return p.text() if p is not None else ""


# --- entries --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Entry:
    kind: str
    page: str
    subject: str      # unique over the set: "work_mem", "string_agg", "pg_dump --jobs", "40P01"
    name: str         # as a question names it: "work_mem", "-j", "40P01"
    description: str
    program: str = ""  # options: "pg_dump"
    alias: str = ""    # options: the other spelling ("--jobs"); errcodes: the condition name


def corpus_pages(docs: Path = DOCS) -> list[Path]:
    """The pages a benchmark run ingests: the reference pages and the chapters the questions come from."""
    patterns = ("sql-*.html", "app-*.html", "runtime-config-*.html", "functions-*.html", "errcodes-appendix.html")
    return sorted({p for pattern in patterns for p in docs.glob(pattern)})


def topic(page: str) -> str:
    """The page family a question is dealt to a split by."""
    if page == "errcodes-appendix.html":
        return "errcodes"
    return page.removesuffix(".html")


def _usable(description: str) -> bool:
    if re.match(r"(See|Refer to)\b|This (?:option|parameter) is (?:obsolete|deprecated)", description):
        return False  # a pointer, not a description
    return len(description.split()) >= MIN_WORDS


def _parameters(path: Path, root: _Node):
    for dt, dd in _pairs(root):
        if not dt.attrs.get("id", "").startswith("GUC-"):
            continue
        var = dt.find("code", "varname")
        if var is not None:
            yield _Entry("parameter", path.name, var.text(), var.text(), _first_paragraph(dd))


def _functions(path: Path, root: _Node):
    for td in root.iter("td", "func_table_entry"):
        paragraphs = [p for p in td.elements() if p.tag == "p"]
        signature = next((p for p in paragraphs if "func_signature" in p.cls().split()), None)
        function = signature.find("code", "function") if signature is not None else None
        if function is None:
            continue  # an operator row
        description = next((p.text() for p in paragraphs if "func_signature" not in p.cls().split()), "")
        name = function.text()
        yield _Entry("function", path.name, name, name, description)


def _flag(code: _Node) -> str:
    return re.split(r"[\s=\[]", code.text(), maxsplit=1)[0]


def _options(path: Path, root: _Node):
    title = root.find("title")
    program = title.text() if title is not None else path.stem.removeprefix("app-")
    for dt, dd in _pairs(root):
        codes = list(dt.iter("code", "option"))
        flags = [f for f in map(_flag, codes) if f.startswith("-")]
        if not flags or not _flag(codes[0]).startswith("-"):
            continue  # a positional argument, a psql meta-command, an environment variable
        if set(flags) & {"-?", "-V", "--help", "--version"}:
            continue  # on every page, and the same words each time
        short = next((f for f in flags if not f.startswith("--")), flags[0])
        long = next((f for f in flags if f.startswith("--")), "")
        alias = long if long != short else ""
        yield _Entry("option", path.name, f"{program} {long or short}", short, _first_paragraph(dd),
                     program=program, alias=alias)


def _errcodes(path: Path, root: _Node):
    heading = ""
    for tr in root.iter("tr"):
        cells = [c for c in tr.elements() if c.tag == "td"]
        if len(cells) == 1 and cells[0].attrs.get("colspan"):
            heading = cells[0].text()
        elif len(cells) == 2:
            code, symbol = cells[0].find("code", "literal"), cells[1].find("code", "symbol")
            if code is not None and symbol is not None and heading.startswith("Class"):
                number, _, title = heading.removeprefix("Class ").partition(" — ")
                answer = f"SQLSTATE {code.text()} is {symbol.text()} (class {number} — {title})"
                yield _Entry("errcode", path.name, code.text(), code.text(), answer, alias=symbol.text())


def _similar(a: str, b: str, ignore: str = "") -> bool:
    x, y = set(_words(a)) - {ignore}, set(_words(b)) - {ignore}
    return len(x & y) >= 0.5 * len(x | y)


def _ambiguous(rows: list[_Entry]) -> bool:
    """`length` on four pages has no single gold page; `point` (coordinates, center of a box, of a
    circle …) has no single answer. Overloads that say the same of each type (`string_agg`) are kept."""
    if len({r.page for r in rows}) > 1:
        return True
    return any(not _similar(a.description, b.description) for a in rows for b in rows)


def _entries(docs: Path = DOCS) -> list[_Entry]:
    """Every usable documented entry, in page order, a subject once."""
    found: list[_Entry] = []
    for path in corpus_pages(docs):
        name = path.name
        if name.startswith("runtime-config-"):
            found += _parameters(path, _parse(path))
        elif name.startswith("functions-"):
            found += _functions(path, _parse(path))
        elif name.startswith("app-"):
            found += _options(path, _parse(path))
        elif name == "errcodes-appendix.html":
            found += _errcodes(path, _parse(path))
    overloads: dict[str, list[_Entry]] = {}
    for e in found:
        if e.kind == "function":
            overloads.setdefault(e.name, []).append(e)
    kept, subjects = [], set()
    flags: dict[str, list[str]] = {}
    for e in found:
        if not _usable(e.description) or e.subject in subjects:
            continue
        if e.kind == "function" and _ambiguous(overloads[e.name]):
            continue
        if e.kind == "option":
            # --host, --echo, --no-owner: the programs share options and say the same of them. A second
            # copy would be the same question on another page, and split() could put them on either side.
            same = flags.setdefault(e.alias or e.name, [])
            if any(_similar(e.description, other, ignore=e.program) for other in same):
                continue
            same.append(e.description)
        subjects.add(e.subject)
        kept.append(e)
    return kept


# --- questions ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Question:
    id: str
    q: str
    kind: str         # parameter | function | option | errcode | unanswerable
    form: str         # direct | paraphrase | task
    page: str         # gold page file name; "" when the pages cannot answer
    topic: str        # page family: what split() keeps on one side
    subject: str
    answer: str       # the documented description: its first one or two sentences
    key_terms: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        d = asdict(self)
        d["key_terms"] = list(self.key_terms)
        return d


_ABBREVIATIONS = ("e.g.", "i.e.", "etc.", "vs.", "approx.", "cf.", "resp.")


def _sentences(text: str) -> list[str]:
    out, start = [], 0
    for m in re.finditer(r"[.!?]\)?(?=\s+[A-Z(`\"'])", text):  # ".)" ends a sentence in parentheses
        tail = text[max(0, m.end() - 8):m.end()].lower()
        if any(tail.endswith(a) for a in _ABBREVIATIONS):
            continue
        out.append(text[start:m.end()].strip())
        start = m.end()
    if text[start:].strip():
        out.append(text[start:].strip())
    return out


def _gold(description: str) -> str:
    """The first sentence, and the second too while the answer stays short."""
    # "; see Section 9.9.2", "(see notes below)" point into text the answer does not carry.
    description = re.sub(r"\s*\((?:see|cf\.) [^()]*\)", "", description)
    description = re.sub(r";\s*see (?:Section|Chapter) \d+(?:\.\d+)*(?=\.?(?:\s|$))", "", description)
    sentences = _sentences(description)
    pointer = len(sentences) > 1 and re.match(r"(See|For (?:details|more information))\b", sentences[1])
    if len(sentences) > 1 and not pointer and len(sentences[0]) + len(sentences[1]) <= 320:
        return f"{sentences[0]} {sentences[1]}"
    return sentences[0]


_STOP = set("""
a about above after again against all also although am an and any are as at be because been before being
below between both but by can cannot could did do does doing done down during each either else even every
for from further had has have having he her here hers how however if in into is it its itself just least
less like made make makes many may might more most much must neither no nor not now of off on once one only
or other otherwise our out over own per rather same see shall she should since so some such than that the
their them then there these they this those though through thus to too under unless until up upon us use
used uses using very via was we were what when whenever where whether which while who whom whose why will
with within without would yet you your
postgresql server value values default parameter parameters setting settings variable option options
function functions specifies specified specify sets set controls control enables enable disables disable
allows allow returns return given argument arguments true false normally also instead otherwise
determines causes currently current section described following whose therefore
""".split())


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9_]+", text.lower())


def _stem(term: str) -> str:
    return term[:max(4, len(term) - 2)]


def _literal(term: str) -> bool:
    """Identifiers and flags are matched whole, not by their first letters."""
    return bool(re.search(r"[_\-0-9]", term))


def _in_text(term: str, text: str) -> bool:
    if _literal(term):
        return re.search(rf"(?<![\w-]){re.escape(term)}(?![\w-])", text, re.IGNORECASE) is not None
    stem = _stem(term)
    return any(w.startswith(stem) for w in _words(text))


def _candidates(text: str, question: str) -> list[str]:
    """Content words of `text` a reader could not copy from `question`, in order, once each."""
    # "receiver" is no evidence for wal_receiver_create_temp_slot: the parts of a name count as asked.
    asked = [part for w in _words(question) for part in {w, *w.split("_")} if part]
    out: list[str] = []
    # Nor is the description's opening verb ("Obtains", "Switches"): an answer says it in its own words.
    lead = (_words(text) or [""])[0]
    for w in _words(text):
        if w == lead:
            continue
        if len(w) < 4 or not w[0].isalpha() or w in _STOP or w in out:
            continue
        if any(a.startswith(_stem(w)) or (len(a) >= 4 and w.startswith(_stem(a))) for a in asked):
            continue
        out.append(w)
    return out


def _rarest(words: list[str], df: Counter, k: int) -> list[str]:
    ranked = sorted(range(len(words)), key=lambda i: (df[words[i]], i))
    return [words[i] for i in sorted(ranked[:k])]


def key_fact_present(answer: str, question: Question) -> bool:
    """Whether `answer` states the gold fact: at least half of the key terms (rounded up) are in it,
    and for a task question the subject it asks for.

    A key term the question itself contains proves nothing and is not counted: an errcode's code
    or condition name is one of its two terms and the question names the other.
    """
    if question.kind == "unanswerable" or not question.key_terms:
        return False
    # A task question describes its subject: the answer must name it (a rare word alone is not the answer).
    if question.form == "task" and question.subject and not _in_text(question.subject, answer):
        return False
    terms = [t for t in question.key_terms if not _in_text(t, question.q)] or list(question.key_terms)
    return sum(_in_text(t, answer) for t in terms) >= math.ceil(len(terms) / 2)


# --- forms ----------------------------------------------------------------------------------------

_NOT_VERBS = {"this", "as", "its", "has", "does", "was", "bytes", "status", "process", "access", "class", "pass",
              "address", "unless", "series", "options", "less", "always", "perhaps", "various", "previous", "is"}
_IMPERATIVES = set("""
abort add allow analyze append attempt begin check clean cluster compress connect copy create define disable
do drop dump echo emit enable end exclude execute exit fail force generate ignore include install issue limit
list output parse prevent print process prompt read record reindex remove require restore run select send set
show skip specify start stream switch terminate test truncate try turn use vacuum verify wait write get
adjust request log
""".split())
_CONJUGATE = {"specify": "specifies", "set": "sets", "select": "selects", "enable": "enables",
              "disable": "disables", "allow": "allows", "define": "defines"}
_TRAILING = {"to", "of", "the", "a", "an", "and", "or", "by", "for", "in", "on", "with", "from", "that", "which",
             "as", "at", "into", "than", "whether", "if", "when"}
_NOUN_LEADS = {
    "parameter": ("maximum ", "minimum ", "the maximum ", "the minimum ", "the number ", "the amount ",
                  "number of ", "amount of "),
    "function": ("current ", "nearest ", "integer ", "greatest ", "least ", "base ", "logarithm ", "minimum ",
                 "maximum ", "remainder ", "inverse ", "exponential ", "absolute ", "square ", "cube ",
                 "natural ", "number of ", "sign ", "the "),
}
_TEMPLATES = {
    ("parameter", "direct"): ["What does the `{n}` setting control?"],
    ("parameter", "paraphrase"): ["Explain the {n} configuration parameter.", "What is {n} in postgresql.conf for?",
                                  "Can you tell me what the {n} setting does?",
                                  "What is the purpose of the {n} server parameter?",
                                  "What happens when I change {n}?"],
    ("parameter", "task"): ["Which configuration parameter {p}?", "Which setting {p}?",
                            "What PostgreSQL setting {p}?"],
    ("parameter", "imperative"): ["Which configuration parameter makes the server {p}?",
                                  "Which setting makes PostgreSQL {p}?"],
    ("function", "direct"): ["What does the function `{n}` do?"],
    ("function", "paraphrase"): ["Explain the {n} function.", "What is {n}() used for in PostgreSQL?",
                                 "How does the SQL function {n} behave?", "What is the purpose of {n}()?",
                                 "Can you describe what {n} does in a query?"],
    ("function", "task"): ["Which function {p}?", "Which PostgreSQL function {p}?", "What SQL function {p}?"],
    ("function", "imperative"): ["Which function do I use to {p}?", "What PostgreSQL function can I call to {p}?"],
    ("option", "direct"): ["What does the `{prog}` option `{n}` do?"],
    ("option", "paraphrase"): ["In {prog}, what is {n} for?", "What happens if I pass {n} to {prog}?",
                               "Explain the {n} flag of {prog}.", "What does {prog} {n} do?"],
    ("option", "task"): ["Which {prog} option {p}?", "What {prog} flag {p}?"],
    ("option", "imperative"): ["Which option tells {prog} to {p}?", "How do I tell {prog} to {p}?"],
    ("option", "negative"): ["Which option tells {prog} {p}?", "How do I tell {prog} {p}?"],
    ("errcode", "direct"): ["What does SQLSTATE {n} mean?"],
    ("errcode", "paraphrase"): ["Which error condition has the code {n}?",
                                "PostgreSQL returned error code {n}; what condition is that?",
                                "What is the condition name of SQLSTATE {n}?"],
    ("errcode", "task"): ["Which SQLSTATE code does PostgreSQL report for {a}?",
                          "My client got the error {a}; what is its SQLSTATE?"],
}


def _pick(templates: list[str], subject: str, **values: str) -> str:
    return templates[_h(subject) % len(templates)].format(**values)


def _lower_first(text: str) -> str:
    first = text.split(" ", 1)[0]
    if len(first) > 1 and not first[1:].islower():
        return text  # "VACUUM", "PostgreSQL", "TCP/IP"
    return text[0].lower() + text[1:]


def _clause(description: str) -> str | None:
    """The first clause of the first sentence, or None where cutting it would leave a fragment."""
    sentence = _sentences(description)[0]
    sentence = re.sub(r"(?<=\w)\((?:e?s)\)", "", sentence)  # "address(es)"
    sentence = sentence.replace("()", "\0")  # "pg_create_restore_point()" inside an aside
    while re.search(r"\s\([^()]*\)", sentence):
        sentence = re.sub(r"\s\([^()]*\)", "", sentence)  # an aside, not the clause's end
    sentence = sentence.replace("\0", "()")
    sentence = re.split(r";|:|\s—\s|\?", sentence, maxsplit=1)[0].strip().rstrip(".")
    clause = sentence
    if len(clause.split()) > 25:
        # A comma ends the clause only before a new one: before "size, last access time" it is a list.
        clause = re.split(r", (?=(?:which|so|and then|but|unless|if|when|where|because|since|while|thus|"
                          r"otherwise|in which|so that|as|e\.g\.|i\.e\.|for example)\b)", clause, maxsplit=1)[0]
    words = clause.split()
    if not 5 <= len(words) <= 25 or words[-1].lower() in _TRAILING and clause != sentence:
        return None
    return clause


def _predicate(kind: str, clause: str) -> tuple[str, str] | None:
    """("third", "sets the …"), ("imperative", "run the dump …"), ("negative", "not to dump …") or None
    when the clause does not start with a verb phrase a question can take over."""
    words = clause.split()
    if words[0] == "This":
        words = words[2:] if words[1] in ("parameter", "variable", "option", "setting") else words[1:]
    if not words:
        return None
    lead = words[0].lower()
    adverb = lead.endswith("ly") and len(words) > 1
    verb = words[1].lower() if adverb else lead
    text = _lower_first(" ".join(words))
    if verb.endswith("s") and not verb.endswith(("ss", "us")) and verb not in _NOT_VERBS and len(verb) > 3:
        return "third", text
    if kind == "option" and not adverb and lead in _CONJUGATE:
        return "third", _CONJUGATE[lead] + text[len(lead):]  # "Specify the …" asks better as "specifies the …"
    if verb in _IMPERATIVES and verb != "do":
        return "imperative", text
    if kind == "option" and (words[:2] == ["Do", "not"] or lead in ("don't", "never")):
        rest = " ".join(words[2:] if lead == "do" else words[1:])
        return "negative", ("never to " if lead == "never" else "not to ") + rest
    if lead == "whether":
        return "third", "controls " + text
    for prefix in _NOUN_LEADS.get(kind, ()):
        if text.startswith(prefix):
            if kind == "parameter":
                return "third", "sets " + ("" if text.startswith("the ") else "the ") + text
            return "third", "gives " + ("" if text.startswith("the ") else "the ") + text
    return None


def _task(e: _Entry) -> str | None:
    clause = _clause(e.description)
    if clause is None or _in_text(e.name, clause) or (e.alias and _in_text(e.alias, clause)):
        return None
    found = _predicate(e.kind, clause)
    if found is None:
        return None
    mood, p = found
    if e.program:
        p = re.sub(rf"(?<=\S) {re.escape(e.program)}\b", " it", p)  # "tells dropdb to force it to prompt"
    return _pick(_TEMPLATES[(e.kind, {"third": "task"}.get(mood, mood))], e.subject, p=p, prog=e.program)


def _question_texts(e: _Entry) -> dict[str, str]:
    """Each form this entry can be asked in."""
    if e.kind == "errcode":
        return {form: _pick(_TEMPLATES[("errcode", form)], e.subject, n=e.name, a=e.alias) for form in FORMS}
    out = {"direct": _pick(_TEMPLATES[(e.kind, "direct")], e.subject, n=e.name, prog=e.program)}
    # The paraphrase of an option spells it the other way ("-j" asked directly, "--jobs" here).
    out["paraphrase"] = _pick(_TEMPLATES[(e.kind, "paraphrase")], e.subject, n=e.alias or e.name, prog=e.program)
    task = _task(e)
    if task:
        out["task"] = task
    return out


# --- unanswerable ---------------------------------------------------------------------------------

# Invented names, each dropped if some page of the documentation mentions it after all.
_FAKE_PARAMETERS = (
    "wal_turbo_mode", "autovacuum_aggressiveness", "shared_buffers_autotune", "query_cache_size",
    "planner_hint_mode", "max_parallel_commit_workers", "checkpoint_burst_limit", "replication_auto_failover",
    "temp_table_compression", "index_prefetch_depth", "vacuum_turbo_cost", "connection_pool_size",
    "max_idle_replicas", "jit_cache_size", "hot_standby_auto_promote", "stats_retention_days",
    "lock_escalation_threshold", "enable_bitmap_skipscan", "wal_encryption_key", "default_table_compression",
    "max_query_memory", "autoanalyze_sample_rows", "archive_parallelism", "logical_decoding_buffer_size",
    "log_query_fingerprints",
)
_FAKE_FUNCTIONS = (
    "jsonb_deep_merge", "array_shuffle", "string_similarity", "date_business_days", "regexp_extract_all",
    "json_flatten", "pg_table_heat", "pg_cancel_all_backends", "interval_humanize", "text_slugify",
    "array_dedupe", "pg_index_bloat",
)
_FAKE_OPTIONS = (
    ("pg_dump", "--turbo"), ("pg_dump", "--skip-indexes"), ("psql", "--dark-mode"), ("pg_restore", "--preview"),
    ("vacuumdb", "--aggressive"), ("pg_basebackup", "--encrypt-with"), ("createdb", "--with-extensions"),
    ("pg_ctl", "--auto-tune"), ("initdb", "--cluster-size"), ("reindexdb", "--online-only"),
    ("pg_isready", "--json"), ("clusterdb", "--parallel-sort"),
)
_OTHER_PRODUCTS = (
    "How do I configure the InnoDB buffer pool size in MySQL?",
    "What does Oracle's PGA_AGGREGATE_TARGET do?",
    "How do I set max server memory in Microsoft SQL Server?",
    "What does innodb_flush_log_at_trx_commit control in MySQL?",
    "How big should the WiredTiger cache be in MongoDB?",
    "Which maxmemory-policy should Redis use for a cache?",
    "How do I pick a compaction strategy for a Cassandra table?",
    "What does PRAGMA journal_mode=WAL change in SQLite?",
    "How do I change the refresh_interval of an Elasticsearch index?",
    "How do I make a Snowflake warehouse auto-suspend after five minutes?",
    "How is provisioned read capacity billed in DynamoDB?",
    "How do I take an incremental backup with Oracle RMAN?",
    "How do I set up an Always On availability group in SQL Server?",
    "How does Galera cluster replication work in MariaDB?",
    "What does retention.ms do on a Kafka topic?",
    "How do I choose the ORDER BY key of a ClickHouse MergeTree table?",
    "How do BigQuery slot reservations work?",
    "What does Oracle's UNDO_RETENTION parameter control?",
    "How do I raise max_allowed_packet in MySQL?",
    "How does CockroachDB decide when to split a range?",
)
_TEAM_FACTS = (
    "Who is on call for the database team this week?",
    "Which team owns the billing database?",
    "Where do we keep the password for the staging database?",
    "When is our next database maintenance window?",
    "Which Slack channel do we use for database incidents?",
    "What instance size is our production database running on?",
    "How long do we keep our nightly database backups?",
    "Who approved last week's schema migration?",
    "What is the ticket number for the replication lag problem we had in March?",
    "What is our naming convention for new tables?",
    "How many read replicas does our production cluster have?",
    "Which VPN do I need to reach the analytics database?",
    "What is the monthly budget for our database hosting?",
    "Where is the runbook for failing over our primary database?",
    "Who do I ask for read access to the data warehouse?",
    "Which team maintains the nightly ETL jobs?",
    "When did we upgrade production to PostgreSQL 15?",
    "What is the URL of our query latency dashboard?",
    "Who has to review a schema migration before we merge it?",
    "At what connection count does our Grafana alert fire?",
)


def _mentioned(names, docs: Path) -> set[str]:
    """The names some page of the documentation (any of its HTML files) contains."""
    wanted = {n.lower() for n in names}
    found = set()
    for path in docs.rglob("*.htm*"):
        text = path.read_text(encoding="utf-8", errors="replace").lower()
        found |= {n for n in wanted - found if n in text}
    return found


def _unanswerable(docs: Path) -> list[Question]:
    mentioned = _mentioned([*_FAKE_PARAMETERS, *_FAKE_FUNCTIONS, *(o for _, o in _FAKE_OPTIONS)], docs)
    asked: list[tuple[str, str, str]] = []  # (form, subject, question)
    for name in _FAKE_PARAMETERS:
        if name not in mentioned:
            asked.append(("direct", name, _TEMPLATES[("parameter", "direct")][0].format(n=name)))
            if _h(name) % 3 == 0:
                asked.append(("paraphrase", name, _pick(_TEMPLATES[("parameter", "paraphrase")], name, n=name)))
    for name in _FAKE_FUNCTIONS:
        if name not in mentioned:
            form = ("direct", "paraphrase")[_h(name) % 2]
            asked.append((form, name, _pick(_TEMPLATES[("function", form)], name, n=name)))
    for program, flag in _FAKE_OPTIONS:
        if flag not in mentioned:
            form = ("direct", "paraphrase")[_h(flag) % 2]
            asked.append((form, f"{program} {flag}", _pick(_TEMPLATES[("option", form)], flag, n=flag, prog=program)))
    asked += [("task", "", q) for q in (*_OTHER_PRODUCTS, *_TEAM_FACTS)]
    return [Question(_id("unanswerable", form, subject or q), q, "unanswerable", form, "", "", subject, "")
            for form, subject, q in asked]


# --- the set --------------------------------------------------------------------------------------

def _id(kind: str, form: str, subject: str) -> str:
    return f"{kind[:3]}-{form[0]}-{hashlib.sha256(f'{kind}|{form}|{subject}'.encode()).hexdigest()[:8]}"


def _forms(e: _Entry, texts: dict[str, str]) -> list[str]:
    """Not every subject in every form: a hash of the subject picks two or three of them."""
    pattern = (("direct", "paraphrase", "task"), ("direct", "task"), ("paraphrase", "task"),
               ("direct", "paraphrase"))[_h(e.subject) % 4]
    chosen = [f for f in pattern if f in texts]
    if len(chosen) < 2:
        chosen = [f for f in FORMS if f in texts][:2]
    return chosen


def _key_terms(e: _Entry, form: str, question: str, answer: str, df: Counter) -> tuple[str, ...] | None:
    if e.kind == "errcode":
        return (e.alias.lower(), e.name.lower())
    if form == "task":
        # The question already paraphrases the description: the fact asked for is the name.
        name = (e.alias or e.name).lower()
        if e.kind == "option" and name != (e.alias or e.name):
            return None  # postgres -S is not -s: a lowercase key term would not tell them apart
        parts = {name, *re.split(r"[-_]+", name)}  # "include" is no second fact beside --include-foreign-data
        others = _rarest([w for w in _candidates(answer, question) if w not in parts], df, 1)
        return (name, *others) if others else None
    first = _sentences(answer)[0]
    terms = _rarest(_candidates(first, question), df, 3)
    if len(terms) < 2:
        terms = _rarest(_candidates(answer, question), df, 3)
    return tuple(terms) if len(terms) >= 2 else None


def build(docs: Path = DOCS) -> list[Question]:
    """The whole set, deterministic for a given documentation tree."""
    entries = _entries(docs)
    asked = [(e, e.description if e.kind == "errcode" else _gold(e.description), _question_texts(e))
             for e in entries]
    # Rarity is counted over one gold answer per subject: the forms of a subject share it.
    df = Counter(w for _, answer, _ in asked for w in set(_words(answer)))
    per_kind: dict[str, list[Question]] = {k: [] for k in SHARES}
    for e, answer, texts in sorted(asked, key=lambda a: _h(a[0].subject)):
        cap = round(SHARES[e.kind] * TOTAL)
        chosen = []
        for form in _forms(e, texts):
            terms = _key_terms(e, form, texts[form], answer, df)
            if terms:
                chosen.append(Question(_id(e.kind, form, e.subject), texts[form], e.kind, form, e.page,
                                       topic(e.page), e.subject, answer, terms))
        if chosen and len(per_kind[e.kind]) + len(chosen) <= cap:
            per_kind[e.kind] += chosen
    order = lambda q: (q.page, q.subject, FORMS.index(q.form))  # noqa: E731
    questions = [q for k in SHARES for q in sorted(per_kind[k], key=order)]
    questions += _unanswerable(docs)
    ids = [q.id for q in questions]
    assert len(ids) == len(set(ids)), "question ids collide"
    return questions


def _family(t: str) -> str:
    return next((f for f in ("runtime-config", "functions", "app") if t.startswith(f + "-")), t)


def split(questions: list[Question], held_out_share: float = 0.4) -> dict[str, list[Question]]:
    """Train and held-out questions that share no page, topic or subject.

    Topics are dealt in the order of their hash, within each page family (so both sides get
    parameters, functions and options), each to whichever side brings held-out closer to its share.
    """
    sizes = Counter(q.topic for q in questions if q.kind != "unanswerable")
    held: set[str] = set()
    for family in sorted({_family(t) for t in sizes}):
        topics = sorted((t for t in sizes if _family(t) == family),
                        key=lambda t: hashlib.sha256(t.encode()).hexdigest())
        target, taken = held_out_share * sum(sizes[t] for t in topics), 0
        for t in topics:
            if abs(taken + sizes[t] - target) < abs(taken - target):
                held.add(t)
                taken += sizes[t]

    def held_out(q: Question) -> bool:
        if q.kind != "unanswerable":
            return q.topic in held
        # By subject where there is one, so both wordings of an invented name fall on one side.
        return _h(q.subject or q.id) % 1000 < held_out_share * 1000

    out: dict[str, list[Question]] = {"train": [], "held_out": []}
    for q in questions:
        out["held_out" if held_out(q) else "train"].append(q)
    for attr in ("page", "topic", "subject"):
        shared = {getattr(q, attr) for q in out["train"]} & {getattr(q, attr) for q in out["held_out"]} - {""}
        assert not shared, f"{attr} on both sides of the split: {sorted(shared)[:5]}"
    return out


def small(questions_by_split: dict[str, list[Question]], n: int = 30) -> dict[str, list[Question]]:
    """About `n` questions for a smoke test: each split in proportion, its kinds dealt in turn (so the
    unanswerable ones come in by the fifth question of a split), each kind's forms in turn."""
    total = sum(len(qs) for qs in questions_by_split.values()) or 1
    out = {}
    for name, qs in questions_by_split.items():
        quota = max(1, round(n * len(qs) / total)) if qs else 0
        queues: dict[str, list[Question]] = {}
        for kind in KINDS:
            by_form = [sorted((q for q in qs if q.kind == kind and q.form == f), key=lambda q: _h(q.id)) for f in FORMS]
            dealt = [q for row in _zip_longest(by_form) for q in row]
            if dealt:
                queues[kind] = dealt
        picked: list[Question] = []
        while len(picked) < quota and any(queues.values()):
            for kind in queues:
                if queues[kind] and len(picked) < quota:
                    picked.append(queues[kind].pop(0))
        out[name] = picked
    return out


def _zip_longest(lists: list[list[Question]]) -> list[list[Question]]:
    return [[lst[i] for lst in lists if i < len(lst)] for i in range(max(map(len, lists), default=0))]


def describe(splits: dict[str, list[Question]]) -> dict:
    out: dict = {}
    for name, qs in splits.items():
        out[name] = {
            "questions": len(qs),
            "answerable": sum(q.kind != "unanswerable" for q in qs),
            "kinds": {k: n for k in KINDS if (n := sum(q.kind == k for q in qs))},
            "forms": {f: n for f in FORMS if (n := sum(q.form == f for q in qs))},
            "kind_form": dict(sorted(Counter(f"{q.kind}/{q.form}" for q in qs).items())),
            "pages": len({q.page for q in qs if q.page}),
            "topics": sorted({q.topic for q in qs if q.topic}),
        }
    out["total"] = sum(len(qs) for qs in splits.values())
    return out


if __name__ == "__main__":
    all_questions = build()
    splits = split(all_questions)
    print(json.dumps(describe(splits), indent=1))
    seen: Counter = Counter()
    for q in sorted(all_questions, key=lambda q: _h(q.id)):
        if seen[q.kind, q.form] < 2:
            seen[q.kind, q.form] += 1
            print(f"\n[{q.kind}/{q.form}] {q.q}\n  page: {q.page or '-'}  key_terms: {list(q.key_terms)}"
                  f"\n  answer: {q.answer or '-'}")
    print("\nsmoke subset:", {k: len(v) for k, v in small(splits).items()})
