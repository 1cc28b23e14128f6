"""Directory selection matches git, plus default ignores, secrets, size caps, links and the tree header."""

import os
from pathlib import Path, PurePosixPath

import pytest

from scoutdoc.ingest import IngestOptions, load_sources
from scoutdoc.ingest.code import DEFAULT_IGNORE_DIRS, DEFAULT_IGNORE_FILES, walk_directory
from scoutdoc.ingest.secrets import is_secret_name

FILES = {
    ".gitignore": "*.log\n!keep.log\nbuild/\n/secret_dir/\ndocs/*.tmp\nlogs/\n# comment\n\\#hash.txt\nassets/*\n!assets/keep.txt\n**/tmpdir\nsrc/**/*.bak\n",
    "assets/drop.txt": "ignored by assets/*\n",
    "assets/keep.txt": "re-included: its directory itself is not ignored\n",
    "src/tmpdir/t.txt": "ignored by **/tmpdir\n",
    "src/a/b/old.bak": "ignored by src/**/*.bak\n",
    "src/old.bak": "also ignored: ** matches zero directories\n",
    "src/main.c": "int main(void) { return 0; }\n",
    "other/old.bak": "kept: pattern is anchored to src/\n",
    "a.py": "print('a')\n",
    "keep.log": "kept by negation\n",
    "x.log": "ignored\n",
    "#hash.txt": "escaped hash pattern\n",
    "build/out.txt": "ignored dir\n",
    "build/keep.txt": "negation cannot reach into an ignored dir\n",
    "sub/build/y.txt": "dir pattern matches at any depth\n",
    "sub/.gitignore": "!x.log\n*.md\n!README.md\ndata/\n",
    "sub/x.log": "re-included by the deeper .gitignore\n",
    "sub/README.md": "# readme\n",
    "sub/notes.md": "ignored by sub/.gitignore\n",
    "sub/data/z.txt": "ignored dir in sub\n",
    "sub/deeper/data/w.txt": "data/ matches at any depth below sub\n",
    "sub/deeper/x.log": "still re-included\n",
    "sub2/logs": "a file named like a dir-only pattern is kept\n",
    "docs/a.tmp": "ignored, anchored pattern\n",
    "docs/deep/b.tmp": "kept: * does not cross /\n",
    "docs/guide.md": "kept\n",
    "with space/file name.txt": "spaces\n",
    "ünïcødé/naïve.md": "unicode dir\n",
    "日本語.txt": "unicode file\n",
    "local-only.txt": "ignored via .git/info/exclude\n",
    "secret_dir/s.txt": "ignored anchored dir\n",
    "node_modules/pkg/index.js": "default-ignored dependency\n",
    "vendor/lib.go": "default-ignored vendor\n",
    ".venv/lib/x.py": "default-ignored venv\n",
    "package-lock.json": "{}\n",
    ".env": "API_KEY=secret\n",
    "config/.env.production": "API_KEY=secret\n",
    "certs/server.pem": "not really a cert\n",
    "id_rsa": "not really a key\n",
}
BINARIES = {"image.png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))}


def make_repo(root: Path, git) -> Path:
    root.mkdir()
    git(root, "init", "-q")
    (root / ".git" / "info").mkdir(exist_ok=True)
    (root / ".git" / "info" / "exclude").write_text("local-only.txt\n", encoding="utf-8")
    for rel, text in FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    for rel, data in BINARIES.items():
        (root / rel).write_bytes(data)
    git(root, "add", "a.py", "sub/README.md")  # some tracked, the rest untracked
    git(root, "add", "-f", "x.log", "secret_dir/s.txt")  # tracked although ignored: git lists them
    return root


def git_selection(root: Path, git) -> set[str]:
    listed = git(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    return {p for p in listed if p}


def documented_removals(rel: str) -> bool:
    parts = PurePosixPath(rel).parts
    return (
        any(part in DEFAULT_IGNORE_DIRS for part in parts[:-1])
        or parts[-1] in DEFAULT_IGNORE_FILES
        or is_secret_name(parts[-1])
    )


def test_selection_equals_git_minus_documented_ignores(tmp_path, git):
    root = make_repo(tmp_path / "repo", git)
    expected = {p for p in git_selection(root, git) if not documented_removals(p)}
    # the fixture is meaningful: negations, anchoring and ** all decide something
    assert {"sub/x.log", "keep.log", "日本語.txt", "assets/keep.txt", "other/old.bak", "src/main.c"} <= expected
    assert not expected & {"assets/drop.txt", "src/tmpdir/t.txt", "src/a/b/old.bak", "src/old.bak", "build/keep.txt"}
    assert {"x.log", "secret_dir/s.txt"} <= expected  # force-added: ignored, yet in the index
    selected, skipped = walk_directory(root, IngestOptions())
    assert {s.rel for s in selected} == expected
    assert {s.source for s in skipped} == {".env", "config/.env.production", "certs/server.pem", "id_rsa"}
    assert all("--include-secrets" in s.reason and s.code == "secret" for s in skipped)

    result = load_sources([root])
    assert {d.source for d in result.documents} == expected - set(BINARIES)
    binary_skips = [s for s in result.skipped if s.source in BINARIES]
    assert binary_skips and "binary" in binary_skips[0].reason


def test_subdirectory_of_a_repo_uses_enclosing_rules(tmp_path, git):
    root = make_repo(tmp_path / "repo", git)
    expected = {p.removeprefix("sub/") for p in git_selection(root, git) if p.startswith("sub/")}
    result = load_sources([root / "sub"])
    assert {d.source for d in result.documents} == expected
    assert "x.log" in expected and "build/y.txt" not in expected


def test_no_gitignore_include_exclude_and_secrets(tmp_path, git):
    root = make_repo(tmp_path / "repo", git)
    everything = {s.rel for s in walk_directory(root, IngestOptions(gitignore=False))[0]}
    assert {"x.log", "secret_dir/s.txt", "local-only.txt", "sub/notes.md"} <= everything
    assert "build/out.txt" not in everything
    assert not any(p.startswith(("node_modules/", ".git/")) for p in everything)  # defaults still apply

    only_md = {s.rel for s in walk_directory(root, IngestOptions(include=("*.md",)))[0]}
    assert only_md == {"sub/README.md", "docs/guide.md", "ünïcødé/naïve.md"}
    no_docs = {s.rel for s in walk_directory(root, IngestOptions(exclude=("docs/",)))[0]}
    assert not any(p.startswith("docs/") for p in no_docs) and "a.py" in no_docs

    with_secrets = {s.rel for s in walk_directory(root, IngestOptions(include_secrets=True))[0]}
    assert {".env", "id_rsa", "certs/server.pem"} <= with_secrets


def test_private_key_content_is_excluded(tmp_path):
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "deploy.txt").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----\n")
    (tmp_path / "proj" / "ok.py").write_text("x = 1\n")
    result = load_sources([tmp_path / "proj"])
    assert [d.source for d in result.documents] == ["ok.py"]
    assert "private key" in result.skipped[0].reason


def test_keys_in_documents_urls_and_env_files_found_in_a_directory_are_excluded(tmp_path):
    """The content scan covered plain text only: a key pasted into a Word file went into the prompt,
    and so did `.envrc`, a database URL with its password, and PGP or PuTTY private keys."""
    import docx

    root = tmp_path / "proj"
    root.mkdir()
    word = docx.Document()
    word.add_paragraph("Deployment notes. aws_secret_access_key = wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY")
    word.save(root / "keys.docx")
    (root / ".envrc").write_text("export DB_PASSWORD=hunter2hunter2\n")
    (root / "db.py").write_text("URL = 'postgresql://admin:Sup3rS3cret@db.example.com/app'\n")
    (root / "docs.md").write_text("Connect with postgresql://user:password@localhost/app (your own values).\n")
    (root / "keys").mkdir()  # PGP and PuTTY private keys by content or name, a Stripe key
    (root / "keys" / "private.asc").write_text("-----BEGIN PGP PRIVATE KEY BLOCK-----\nlQOYBF\n-----END PGP PRIVATE KEY BLOCK-----\n")
    (root / "keys" / "server.txt").write_text("PuTTY-User-Key-File-3: ssh-ed25519\nPrivate-Lines: 1\nAAAA\n")
    (root / "keys" / "named.ppk").write_text("anything\n")
    (root / "pay.py").write_text("STRIPE = 'sk_test_4eC39HqLyjWDarjtT1zdp7dc'\n")
    result = load_sources([root])
    assert [d.source for d in result.documents] == ["docs.md"]
    reasons = {s.source: s.reason for s in result.skipped}
    assert "AWS key" in reasons["keys.docx"] and "password in a URL" in reasons["db.py"]
    assert "--include-secrets" in reasons[".envrc"] and "--include-secrets" in reasons["keys/named.ppk"]
    assert "private key" in reasons["keys/private.asc"] and "private key" in reasons["keys/server.txt"]
    assert "Stripe key" in reasons["pay.py"]
    assert len(load_sources([root / "keys.docx"]).documents) == 1  # named on purpose: read as asked


def test_size_cap_and_tree_header(tmp_path):
    root = tmp_path / "proj"
    (root / "src" / "pkg").mkdir(parents=True)
    (root / "src" / "pkg" / "mod.py").write_text("def f():\n    return 1\n")
    (root / "README.md").write_text("# proj\n")
    (root / "big.txt").write_text("x" * 5000)
    result = load_sources([root], IngestOptions(max_file_size=1000))
    assert [d.source for d in result.documents] == ["README.md", "src/pkg/mod.py"]
    assert result.skipped[0].source == "big.txt" and "--max-file-size" in result.skipped[0].reason
    assert result.tree == "proj/\n├── README.md\n└── src/\n    └── pkg/\n        └── mod.py"
    code = result.documents[1]
    assert (code.kind, code.language, code.segments[0].where) == ("code", "python", "L1-2")


@pytest.mark.skipif(os.name == "nt", reason="symlinks")
def test_links_loops_and_permissions(tmp_path):
    root = tmp_path / "proj"
    root.mkdir()
    outside = tmp_path / "outside.txt"
    outside.write_text("outside\n")
    (root / "real.txt").write_text("real\n")
    (root / "inside-link.txt").symlink_to(root / "real.txt")
    (root / "outside-link.txt").symlink_to(outside)
    (root / "loop-a").symlink_to(root / "loop-b")
    (root / "loop-b").symlink_to(root / "loop-a")
    (root / "dangling").symlink_to(root / "nope")
    result = load_sources([root, tmp_path / "top-loop"])
    assert sorted(d.source for d in result.documents) == ["inside-link.txt", "real.txt"]
    reasons = {s.source: s.reason for s in result.skipped}
    assert "outside the directory" in reasons["outside-link.txt"]
    assert "loop" in reasons["loop-a"] and "loop" in reasons["loop-b"]
    assert "dangling" in reasons["dangling"]

    (tmp_path / "top-loop").symlink_to(tmp_path / "top-loop")
    assert "loop" in load_sources([tmp_path / "top-loop"]).skipped[0].reason
    if os.geteuid() != 0:  # root reads anything
        locked = tmp_path / "locked.txt"
        locked.write_text("secret\n")
        locked.chmod(0)
        assert "permission denied" in load_sources([locked]).skipped[0].reason


def test_an_unreadable_subdirectory_is_one_skip_and_the_rest_is_read(tmp_path, monkeypatch):
    """Looking for a locked directory's .gitignore raises EACCES (as does /proc/1/fdinfo for root):
    the walk must go on. Root reads through chmod 000, so the refusal is simulated."""
    from pathlib import Path

    root = tmp_path / "d"
    (root / "locked").mkdir(parents=True)
    (root / "locked" / "inner.txt").write_text("hidden\n")
    (root / "ok.txt").write_text("hi\n")
    real_is_file = Path.is_file

    def is_file(self, *args, **kwargs):
        if self.parent.name == "locked":
            raise PermissionError(13, "Permission denied", str(self))
        return real_is_file(self, *args, **kwargs)

    monkeypatch.setattr(Path, "is_file", is_file)
    result = load_sources([root])
    assert [d.source for d in result.documents] == ["ok.txt"]
    assert [s.source for s in result.skipped] == ["locked"] and "permission denied" in result.skipped[0].reason


def test_an_ignored_directory_named_explicitly_is_read(tmp_path, git):
    root = make_repo(tmp_path / "repo", git)
    result = load_sources([root / "build", root / "secret_dir"])
    assert sorted(d.source for d in result.documents) == ["keep.txt", "out.txt", "s.txt"]


def test_matcher_pre_check_agrees_with_pathspec():
    """The one-regex pre-check may only skip paths no pattern matches: verdicts equal pathspec's."""
    import pathspec

    from scoutdoc.ingest.code import Matcher

    lines = FILES[".gitignore"].splitlines() + ["*.py[cod]", "!important.pyc", "/top_only", "deep/**/x", "name with space", "dir_only/"]
    matcher = Matcher(lines)
    spec = pathspec.GitIgnoreSpec.from_lines(lines)
    names = ["a.py", "x.log", "keep.log", "build/", "build/out.txt", "sub/build/", "secret_dir/", "sub/secret_dir/",
             "docs/a.tmp", "docs/sub/a.tmp", "#hash.txt", "assets/drop.txt", "assets/keep.txt", "src/tmpdir/", "src/a/b/old.bak",
             "other/old.bak", "m.pyc", "important.pyc", "top_only", "sub/top_only", "deep/a/b/x", "name with space",
             "dir_only", "dir_only/", "sub/dir_only/f", "logs/", "logs", "plain.txt"]
    for name in names:
        assert matcher.check(name) == spec.check_file(name).include, name
        assert matcher.match_file(name) == spec.match_file(name), name
    assert Matcher(["# only a comment", ""]).check("a.py") is None
    unanchored = Matcher(["*.log", "/build", "docs/"])  # mixes any-depth and rooted patterns
    for name in ["x.log", "a/x.log", "build", "a/build", "docs/", "a/docs/", "docs", "x.logs"]:
        assert unanchored.check(name) == pathspec.GitIgnoreSpec.from_lines(["*.log", "/build", "docs/"]).check_file(name).include, name


def test_the_text_of_one_run_is_capped_and_an_oversized_text_file_is_not_read(tmp_path, monkeypatch):
    """152 MB of text took 4.5 GB (about 25 bytes per character): past the cap the remaining sources
    are skips with the reason, and a text file surely over it is refused from its size alone."""
    from scoutdoc.ingest import IngestOptions

    root = tmp_path / "logs"
    root.mkdir()
    for i in range(4):
        (root / f"{i}.log").write_text(f"line {i}\n" * 300)  # 2,100 characters each
    result = load_sources([root], IngestOptions(max_total_chars=5000))
    assert [d.source for d in result.documents] == ["0.log", "1.log"]
    assert [s.source for s in result.skipped] == ["2.log", "3.log"]
    assert all(s.code == "limit" and "--include/--exclude" in s.reason for s in result.skipped)
    import scoutdoc.ingest as ingest

    big = tmp_path / "big.txt"
    with open(big, "wb") as handle:
        handle.truncate(1 << 30)  # sparse: 1 GiB on paper
    parsed = []
    real = ingest._ingest_bytes
    monkeypatch.setattr(ingest, "_ingest_bytes", lambda source, *a, **k: parsed.append(source) or real(source, *a, **k))
    result = load_sources([big], IngestOptions(max_total_chars=1000))
    assert not result.documents and result.skipped[0].code == "limit" and parsed == []


def test_force_added_files_are_selected_under_a_directory_whose_name_is_a_glob(tmp_path, git):
    """The index is listed whole and cut to the directory: as a git pathspec "data[1]" is a glob."""
    root = tmp_path / "r"
    (root / "data[1]").mkdir(parents=True)
    git(root, "init", "-q")
    (root / ".gitignore").write_text("*.txt\n")
    (root / "data[1]" / "a.txt").write_text("tracked although ignored\n")
    (root / "data[1]" / "b.txt").write_text("ignored\n")
    git(root, "add", "-f", "data[1]/a.txt")
    assert [s.rel for s in walk_directory(root / "data[1]", IngestOptions())[0]] == ["a.txt"]
    assert [s.rel for s in walk_directory(root, IngestOptions())[0]] == [".gitignore", "data[1]/a.txt"]


@pytest.mark.parametrize(("ignore", "files"), [
    ("logs/**\n!logs/.gitkeep\n", ["logs/.gitkeep", "logs/a.log"]),  # logs/ itself is entered
    ("*\n!*/\n!*.md\n", ["d/b.md", "d/c.txt", "top.md"]),  # the whitelist idiom
    ("data/**\n!data/**/\n!data/**/*.md\n", ["data/a.md", "data/s/b.md", "data/s/c.txt"]),
    ("x/**/\n", ["x/a", "x/y/b"]),
    ("?\n!/x\n", ["x/b/f.txt", "x/cc/g.txt", "z.txt"]),  # the negation re-includes x, not what lies below it
    ("**/**/\n", ["a", "d/e"]),
])
def test_selection_in_a_repository_is_gits_own(tmp_path, git, ignore, files):
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    (root / ".gitignore").write_text(ignore)
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("text\n")
    assert {s.rel for s in walk_directory(root, IngestOptions())[0]} == git_selection(root, git)


def test_a_repository_inside_a_repository_is_one_entry_skipped_with_its_reason(tmp_path, git):
    root = tmp_path / "repo"
    (root / "nested").mkdir(parents=True)
    git(root, "init", "-q")
    git(root / "nested", "init", "-q")
    (root / "a.txt").write_text("top\n")
    (root / "nested" / "n.txt").write_text("inside\n")
    selected, skipped = walk_directory(root, IngestOptions())
    assert [s.rel for s in selected] == ["a.txt"] and "nested/" in git_selection(root, git)
    assert [(s.source, s.code) for s in skipped] == [("nested", "repository")]
    assert "pass its path to read it" in skipped[0].reason
    assert [s.rel for s in walk_directory(root / "nested", IngestOptions())[0]] == ["n.txt"]


def test_a_linked_worktree_is_read_as_git_lists_it(tmp_path, git):
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    (root / ".gitignore").write_text("*.log\n")
    (root / "a.txt").write_text("tracked\n")
    git(root, "add", ".")
    git(root, "-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qm", "one")
    git(root, "worktree", "add", "-q", str(tmp_path / "wt"))
    (tmp_path / "wt" / "new.txt").write_text("untracked\n")
    (tmp_path / "wt" / "x.log").write_text("ignored\n")
    assert [s.rel for s in walk_directory(tmp_path / "wt", IngestOptions())[0]] == [".gitignore", "a.txt", "new.txt"]


def test_a_directory_git_ignores_by_a_global_exclude_is_read_when_named(tmp_path, git, monkeypatch):
    root = tmp_path / "repo"
    (root / "generated" / "gen").mkdir(parents=True)
    git(root, "init", "-q")
    (root / "generated" / "gen" / "out.py").write_text("x = 1\n")
    excludes = tmp_path / "global-ignore"
    excludes.write_text("generated/\n")
    config = tmp_path / "gitconfig"
    config.write_text(f"[core]\n\texcludesFile = {excludes}\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    assert [s.rel for s in walk_directory(root, IngestOptions())[0]] == []  # git's own selection leaves it out
    assert [s.rel for s in walk_directory(root / "generated" / "gen", IngestOptions())[0]] == ["out.py"]
