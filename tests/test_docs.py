"""The README and docs/ stay true to the repository.

- Every relative link in README.md and docs/*.md resolves to a file inside the repository, and an
  ``#anchor`` into a markdown file names one of its headings (GitHub's slug rules).
- Every command in README's shell blocks exists: console scripts (from setup.cfg) and
  ``python -m`` modules answer ``--help`` (with the subcommand and options shown), ``make``
  targets exist in the Makefile, scripts and repository paths exist, pip extras exist in
  setup.cfg. docs/ shell blocks get the same checks, except that a ``python -m`` module there
  need only import.
- README's Python example runs.
"""
import configparser
import functools
import importlib.util
import os
import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / 'README.md'
MARKDOWN = [README] + sorted((ROOT / 'docs').glob('*.md'))
SHELL_INFO = {'', 'bash', 'sh', 'shell', 'console'}
REPO_DIRS = ('requirements/', 'experiments/', 'figures/', 'tests/', 'docs/', 'mixnorm_chainer/',
             '.ci/')
FENCE = re.compile(r'^\s*(```|~~~)\s*([\w+-]*)')
HEADING = re.compile(r'^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$')
INLINE_CODE = re.compile(r'(`+)(.+?)\1')
LINK = re.compile(r'!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+"[^"]*")?\s*\)')
REF_DEF = re.compile(r'^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+"[^"]*")?\s*$')
SCHEME = re.compile(r'^[a-zA-Z][a-zA-Z0-9+.-]*:')


def split_markdown(path):
    """(prose lines, [(info string, code lines)]) of a markdown file: fenced blocks apart."""
    prose, blocks, block = [], [], None
    for line in path.read_text(encoding='utf-8').splitlines():
        m = FENCE.match(line)
        if block is None and m:
            block = (m.group(1), m.group(2).lower(), [])
        elif block is not None and line.strip().startswith(block[0]):
            blocks.append(block[1:])
            block = None
        elif block is not None:
            block[2].append(line)
        else:
            prose.append(line)
    assert block is None, f'{path.name}: unclosed code fence'
    return prose, blocks


def slug(text):
    """GitHub's heading anchor: link syntax rendered to its text, lowercase, punctuation other
    than '-' and '_' dropped, spaces to '-'."""
    text = re.sub(r'!?\[([^\]]*)\]\([^)]*\)', r'\1', text)
    text = re.sub(r'<[^>]+>', '', text)
    return re.sub(r'[^\w\- ]', '', text.strip().lower()).replace(' ', '-')


@functools.cache
def anchors(path):
    seen, result = {}, set()
    for line in split_markdown(path)[0]:
        m = HEADING.match(line)
        if m:
            base = slug(m.group(2))
            n = seen.get(base, 0)
            seen[base] = n + 1
            result.add(base if n == 0 else f'{base}-{n}')
    return result


def links(path):
    for line in split_markdown(path)[0]:
        m = REF_DEF.match(line)
        if m:
            yield m.group(1)
            continue
        for m in LINK.finditer(INLINE_CODE.sub('', line)):
            yield m.group(1)


def test_markdown_files_found():
    assert README.exists()
    names = {p.name for p in MARKDOWN}
    assert {'experiments.md', 'verification.md', 'decisions.md', 'gpu.md'} <= names


@pytest.mark.parametrize('path', MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path):
    problems = []
    found = list(links(path))
    for target in found:
        if not target or SCHEME.match(target):
            continue
        file_part, _, anchor = target.partition('#')
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.is_relative_to(ROOT):
            problems.append(f'{target}: outside the repository')
            continue
        if not dest.exists():
            problems.append(f'{target}: no such file')
            continue
        if anchor and dest.suffix == '.md' and anchor not in anchors(dest):
            problems.append(f'{target}: no heading #{anchor} in {dest.relative_to(ROOT)}')
    assert not problems, f'{path.relative_to(ROOT)}:\n' + '\n'.join(problems)


def test_nothing_points_outside_the_repository():
    for path in MARKDOWN:
        text = path.read_text(encoding='utf-8')
        assert '../shared' not in text, f'{path.name} refers to ../shared'
    for path in [README] + [ROOT / 'docs' / n for n in (
            'layer.md', 'experiments.md', 'figures.md', 'dcgan-fid.md', 'gbn.md',
            'crosscheck.md', 'chainermn.md', 'decisions.md', 'verification.md',
            'development.md')]:
        if path.exists():
            hits = re.findall(r'\bissues?\s+#?\d+', path.read_text(encoding='utf-8'), re.I)
            assert not hits, f'{path.name} names tracker issues: {hits}'


def test_slug_rules():
    assert slug('What is verified, and at what scale') == 'what-is-verified-and-at-what-scale'
    assert slug('Scaled comparison: `experiments/gbn_comparison.sh`') == \
        'scaled-comparison-experimentsgbn_comparisonsh'
    assert slug('Paper setting -> full-scale command') == 'paper-setting---full-scale-command'
    assert slug('DenseNet with MN and Nesterov at lr 0.1') == \
        'densenet-with-mn-and-nesterov-at-lr-01'


# --- commands -----------------------------------------------------------------------------

def console_scripts():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / 'setup.cfg')
    scripts = {}
    for line in cfg['options.entry_points']['console_scripts'].strip().splitlines():
        name, _, target = line.partition('=')
        scripts[name.strip()] = target.strip().partition(':')[0]
    return scripts


def extras():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / 'setup.cfg')
    return set(cfg['options.extras_require'])


def make_targets():
    targets = set()
    for line in (ROOT / 'Makefile').read_text().splitlines():
        if line.startswith(('\t', '#', ' ')) or not line.strip():
            continue
        m = re.match(r'^([^=:#]+?)\s*::?(?!=)(.*)$', line)
        if not m:
            continue
        names = m.group(1).split()
        if names == ['.PHONY']:
            targets.update(m.group(2).split())
        else:
            targets.update(names)
    return targets


def shell_commands(path):
    """Simple commands (token lists) of a markdown file's shell blocks: comments dropped,
    continuation lines joined, split at '&&', '||', ';' and '|'."""
    commands = []
    for info, lines in split_markdown(path)[1]:
        if info not in SHELL_INFO:
            continue
        text = '\n'.join(lines).replace('\\\n', ' ')
        for line in text.splitlines():
            line = re.sub(r'^\s*\$\s+', '', line)
            lexer = shlex.shlex(line, posix=True, punctuation_chars=';&|')
            lexer.whitespace_split = True
            lexer.commenters = '#'
            command = []
            for token in lexer:
                if token in (';', '&&', '||', '|', '&'):
                    if command:
                        commands.append(command)
                    command = []
                else:
                    command.append(token)
            if command:
                commands.append(command)
    return commands


def script_argv(name):
    exe = Path(sys.executable).parent / name
    if exe.exists():
        return [str(exe)]
    return [sys.executable, '-m', console_scripts()[name]]


def subcommands(help_text):
    m = re.search(r'\{([\w,-]+)\}', help_text)
    return set(m.group(1).split(',')) if m else set()


def run_help(argv):
    """(exit status, output) of ``argv --help`` in a fresh process, as a user would run it."""
    env = dict(os.environ, MPLBACKEND='Agg')
    p = subprocess.run(list(argv) + ['--help'], capture_output=True, text=True, timeout=120,
                       cwd=ROOT, env=env)
    return p.returncode, p.stdout + p.stderr


# One process answers many ``python -m MODULE [SUB] --help`` questions (chainer is imported
# once): prints {"MODULE SUB": [status, output]} as JSON.
HELP_BATCH = r"""
import contextlib, io, json, runpy, sys, warnings
warnings.simplefilter('ignore')
result = {}
for request in json.loads(sys.argv[1]):
    out = io.StringIO()
    sys.argv = [request[0]] + request[1:] + ['--help']
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            runpy.run_module(request[0], run_name='__main__')
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    result[' '.join(request)] = [code, out.getvalue()]
print(json.dumps(result))
"""


def batch_help(requests):
    import json
    if not requests:
        return {}
    env = dict(os.environ, MPLBACKEND='Agg')
    p = subprocess.run([sys.executable, '-c', HELP_BATCH, json.dumps(sorted(requests))],
                       capture_output=True, text=True, timeout=240, cwd=ROOT, env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    return {tuple(k.split(' ')): tuple(v) for k, v in json.loads(p.stdout).items()}


@functools.cache
def plan():
    """What the shell blocks invoke, as (where, kind, name, args, strict), and the help texts
    they need: README's programs run ``--help`` in their own process (console scripts through
    the venv's bin or ``python -m``); subcommands, and docs/ programs, in one batch process."""
    scripts = console_scripts()
    calls = []
    for path in MARKDOWN:
        strict = path == README
        where = os.path.relpath(path, ROOT)
        for tokens in shell_commands(path):
            env = []
            while tokens and re.match(r'^[A-Za-z_][A-Za-z0-9_]*=', tokens[0]):
                env.append(tokens[0].partition('=')[2])
                tokens = tokens[1:]
            if not tokens:
                continue
            calls.append((where, 'paths', None, env + tokens, strict))
            base = [os.path.basename(t) for t in tokens]
            if base[0] == 'make':
                calls.append((where, 'make', None, tokens[1:], strict))
                continue
            if 'pip' in base and 'install' in tokens:
                calls.append((where, 'extras', None, tokens, strict))
            for i, b in enumerate(base):
                if b in scripts:
                    calls.append((where, 'script', b, tokens[i + 1:], strict))
                    break
                if re.fullmatch(r'python[\d.]*', b) and i + 1 < len(tokens):
                    if tokens[i + 1] == '-m' and i + 2 < len(tokens):
                        kind = 'module' if strict else 'import'
                        calls.append((where, kind, tokens[i + 2], tokens[i + 3:], strict))
                    elif tokens[i + 1].endswith('.py'):
                        calls.append((where, 'file', tokens[i + 1], tokens[i + 2:], strict))
                    break
    direct, batch = {}, set()
    for _where, kind, name, args, strict in calls:
        module = scripts.get(name, name)
        if kind == 'script' and strict:
            direct[('script', name)] = script_argv(name)
        elif kind == 'module':
            direct[('module', name)] = [sys.executable, '-m', name]
        elif kind == 'file' and strict and (ROOT / name).exists():
            direct[('file', name)] = [sys.executable, name]
        if kind in ('script', 'module'):
            batch.add((module,))
            if args and not args[0].startswith('-'):
                batch.add((module, args[0]))
    with ThreadPoolExecutor(4) as pool:
        answers = pool.map(run_help, direct.values())
        batched = pool.submit(batch_help, [list(r) for r in batch])
        helps = dict(zip(direct, answers))
        helps.update(batched.result())
    return calls, helps


def options_of(args):
    return [a.partition('=')[0] for a in args if a.startswith('--') and len(a) > 2]


def check_call(call, helps, targets, all_extras):
    where, kind, name, args, strict = call
    label = f'{where}: {name or ""} {" ".join(args)}'.strip()
    if kind == 'paths':
        outputs = ('--out', '-o', '--save', '--json', '--csv')   # what the command writes
        values = [t.partition('=')[2] if re.match(r'^[\w-]+=', t) else t
                  for i, t in enumerate(args) if not (i and args[i - 1] in outputs)
                  and not t.startswith(tuple(o + '=' for o in outputs))]
        return [f'{label}: {t} does not exist' for t in values
                if t.startswith(REPO_DIRS) and not (ROOT / t.rstrip('/')).exists()]
    if kind == 'make':
        names = [t for t in args if '=' not in t and not t.startswith('-')]
        return [f'{where}: make {t}: no such target in the Makefile' for t in names
                if t not in targets]
    if kind == 'extras':
        found = [e for t in args for e in re.findall(r'\[([\w,-]+)\]', t)]
        return [f'{label}: extra [{e}] not in setup.cfg' for group in found
                for e in group.split(',') if e not in all_extras]
    if kind == 'import':
        return [] if importlib.util.find_spec(name) else [f'{label}: cannot import {name}']
    if kind == 'file':
        if not (ROOT / name).exists():
            return [f'{label}: {name} does not exist']
        if ('file', name) not in helps:
            return []
        code, text = helps[('file', name)]
        if code != 0:
            return [f'{label}: --help exited {code}: {text[-500:]}']
        return [f'{label}: option {o} not in its --help' for o in options_of(args)
                if not re.search(re.escape(o) + r'(?![\w-])', text)]
    problems = []
    if (kind, name) in helps:                   # README: the program's own --help
        code, text = helps[(kind, name)]
        if code != 0:
            problems.append(f'{label}: --help exited {code}: {text[-500:]}')
    module = console_scripts().get(name, name)
    code, text = helps[(module,)]
    if code != 0:
        return problems + [f'{label}: python -m {module} --help exited {code}: {text[-500:]}']
    if args and not args[0].startswith('-') and subcommands(text):
        if args[0] not in subcommands(text):
            return problems + [f'{label}: {args[0]!r} is not a subcommand '
                               f'({sorted(subcommands(text))})']
        code, text = helps[(module, args[0])]
        if code != 0:
            return problems + [f'{label}: {args[0]} --help exited {code}: {text[-500:]}']
    return problems + [f'{label}: option {o} not in its --help' for o in options_of(args)
                       if not re.search(re.escape(o) + r'(?![\w-])', text)]


def test_readme_shows_the_commands_it_should():
    calls, _ = plan()
    readme = [c for c in calls if c[0] == 'README.md']
    assert {'make', 'script', 'module', 'file', 'extras'} <= {c[1] for c in readme}
    assert {'mixnorm-exp', 'mixnorm-doctor'} <= {c[2] for c in readme if c[1] == 'script'}
    assert {'demo', 'test'} <= {t for c in readme if c[1] == 'make' for t in c[3]}


def test_commands_exist():
    calls, helps = plan()
    targets, all_extras = make_targets(), extras()
    problems = [p for call in calls for p in check_call(call, helps, targets, all_extras)]
    assert not problems, '\n'.join(problems)


def test_make_target_parser():
    targets = make_targets()
    assert {'demo', 'test', 'setup', 'lint', 'figures', 'doctor'} <= targets
    assert 'PYTHON' not in targets and 'VENV' not in targets


def test_readme_python_example_runs(tmp_path):
    blocks = [lines for info, lines in split_markdown(README)[1] if info == 'python']
    assert blocks, 'README has no Python example'
    script = tmp_path / 'example.py'
    script.write_text('\n'.join(blocks[0]) + '\n')
    p = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                       timeout=120, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
