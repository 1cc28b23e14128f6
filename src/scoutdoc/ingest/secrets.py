"""Keeping credentials out of the prompt: secret files by name or place, and token patterns in text.

Files found by walking a directory or inside an archive are checked; a file the user names
explicitly is read as asked, and `--include-secrets` turns the checks off. A match skips the whole
file with a reason naming what was found and where, so the user knows what was left out. The
content rules each carry literal needles tested first with `in` (a C-speed scan), so the regexes
only run on the few files that could match and a large codebase pays almost nothing.
"""

import fnmatch
import re
from dataclasses import dataclass

from .document import Unreadable

SECRET_FILE_GLOBS = (
    ".env*", "*.pem", "*.key", "*.p12", "*.pfx", "*.jks", "*.keystore", "id_rsa", "id_dsa",
    "id_ecdsa", "id_ed25519", "*.ppk", ".netrc", ".pgpass", ".htpasswd", "credentials", "credentials.*",
    "*credentials*.json", "secrets.yml", "secrets.yaml", "secrets.json", "*.secret", "*.secrets",
    # package registries, git, containers and cloud CLIs
    ".npmrc", ".yarnrc.yml", ".pypirc", ".git-credentials", ".dockercfg", ".s3cfg", ".boto", ".vault-token",
    ".terraformrc", "terraform.rc", "*.tfstate", "service-account*.json",
)
# Files whose name is harmless alone but whose place makes them credential stores.
SECRET_PATH_GLOBS = (
    ".docker/config.json", ".kube/config", ".config/gh/hosts.yml", ".composer/auth.json", ".config/hub",
    ".gnupg/*", ".ssh/*",
)
SECRET_SKIP_REASON = "looks like a secret (keys, credentials, .env), excluded; pass --include-secrets to read it"

_SECRET_NAME = re.compile("|".join(fnmatch.translate(g) for g in SECRET_FILE_GLOBS))
_SECRET_PATH = re.compile("|".join(fnmatch.translate(g) for g in SECRET_PATH_GLOBS))


def is_secret_name(name: str) -> bool:
    return _SECRET_NAME.match(name) is not None


def is_secret_path(rel: str) -> bool:
    """A secret by its file name, or by the directory it sits in (`.docker/config.json`)."""
    parts = rel.split("/")
    if is_secret_name(parts[-1]):
        return True
    return len(parts) >= 2 and _SECRET_PATH.match("/".join(parts[-2:])) is not None


@dataclass(frozen=True)
class _Rule:
    what: str
    needles: tuple[str, ...]  # any of these must occur (in the lower-cased text when `fold`)
    regex: re.Pattern
    fold: bool = False
    mixed: bool = False  # the captured value must hold letters and digits (a generic assignment)


_RULES = (
    _Rule("a private key", ("PRIVATE KEY", "PuTTY-User-Key-File"),
          re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|^PuTTY-User-Key-File-\d+:", re.M)),
    _Rule("a Stripe key", ("sk_test_", "rk_live_", "rk_test_"), re.compile(r"\b[sr]k_(?:test|live)_[A-Za-z0-9]{16,}")),
    _Rule("an npm auth token", ("_auth", "npm_"), re.compile(r"(?m)(?:_authToken|^\s*_auth)\s*=\s*\S{8,}|\bnpm_[A-Za-z0-9]{36}\b")),
    _Rule("a PyPI token", ("pypi-",), re.compile(r"\bpypi-AgE[A-Za-z0-9_-]{40,}")),
    _Rule("an AWS key", ("AKIA", "ASIA", "aws_secret_access_key"),
          re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b|aws_secret_access_key\s*[=:]\s*\S{20,}")),
    _Rule("a Google API key", ("AIza",), re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b")),
    _Rule("an Azure storage key", ("AccountKey=",), re.compile(r"AccountKey=[A-Za-z0-9+/=]{40,}")),
    _Rule("a GitHub token", ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
          re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{40,})\b")),
    _Rule("a GitLab token", ("glpat-",), re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}")),
    _Rule("a Slack token", ("xox",), re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}")),
    _Rule("an API secret key", ("sk-", "sk_live_", "hf_"),
          re.compile(r"\bsk-(?:ant-|proj-)?[A-Za-z0-9_-]{32,}|\bsk_live_[A-Za-z0-9]{16,}|\bhf_[A-Za-z0-9]{34}\b")),
    _Rule("a Docker registry auth", ('"auth"',), re.compile(r'"auth"\s*:\s*"[A-Za-z0-9+/]{12,}={0,2}"')),
    _Rule("an Authorization header", ("authorization",),
          re.compile(r"(?i)\bauthorization\b[\"']?\s*[:=]\s*[\"']?(?:bearer|basic|token)\s+[A-Za-z0-9._~+/-]{16,}"), fold=True),
    _Rule("a password in a URL", ("://",),
          re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s/:@'\"]*:(?!(?:password|passwd|pass|secret|pw|changeme|guest|x+|\*+)@)"
                     r"[^\s/@<>{}$'\"]{4,}@[\w.-]+", re.IGNORECASE)),
    _Rule("a token or password assignment", ("token", "secret", "passw", "api_key", "apikey", "api-key"),
          re.compile(r"(?i)\b[\w.-]*(?:token|secret|passw(?:or)?d|api[_-]?key|apikey)[\"']?\s*[:=]\s*[\"']?([A-Za-z0-9._~+/-]{20,}=*)"),
          fold=True, mixed=True),
)


def find_secret(text: str) -> tuple[str, int] | None:
    """(what was found, its 1-based line) for the first credential-looking string in `text`, or None."""
    lowered: str | None = None
    for rule in _RULES:
        if rule.fold:
            lowered = lowered if lowered is not None else text.lower()
            haystack = lowered
        else:
            haystack = text
        if not any(needle in haystack for needle in rule.needles):
            continue
        for match in rule.regex.finditer(text):
            if rule.mixed:
                value = match.group(1)
                if not (any(c.isdigit() for c in value) and any(c.isalpha() for c in value)):
                    continue
            return rule.what, text.count("\n", 0, match.start()) + 1
    return None


def refuse_secrets(text: str) -> None:
    """Raise Unreadable (code "secret") when `text` holds a key or token."""
    found = find_secret(text)
    if found:
        what, line = found
        raise Unreadable(f"contains what looks like {what} (line {line}), excluded; pass --include-secrets to read it", "secret")
