"""Reading a YOLO ``data.yaml`` (the file that names a YOLO-layout data set's folders and classes).

`load_data_yaml(path)` parses it with PyYAML when that is installed, else with `parse_simple_yaml`,
a reader of the part of YAML these files use: top-level ``key: value`` lines, values that are
plain or quoted scalars, inline lists ``[a, b]`` and mappings ``{0: a}``, or a block below the
key of ``- item`` lines or ``index: name`` lines; ``#`` comments. Other top-level keys (such as a
``download:`` script block) are skipped whatever they hold. A file outside this subset gets a
one-line error that says to install PyYAML.
"""
import re


class YamlError(ValueError):
    """The file cannot be read as a data.yaml; the message names the line."""


def _strip_comment(line):
    quote = None
    for k, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in '\'"':
            quote = ch
        elif ch == '#' and (k == 0 or line[k - 1] in ' \t'):
            return line[:k].rstrip()
    return line.rstrip()


def _split_items(text):
    """'a, "b, c", d' -> ['a', '"b, c"', 'd'] (commas inside quotes kept)."""
    items, quote, current = [], None, ''
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in '\'"':
            quote = ch
        elif ch == ',':
            items.append(current.strip())
            current = ''
            continue
        current += ch
    if current.strip():
        items.append(current.strip())
    return items


def _scalar(text):
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in '\'"':
        return text[1:-1]
    if text in ('', '~', 'null', 'Null', 'NULL'):
        return None
    if text in ('true', 'True', 'TRUE'):
        return True
    if text in ('false', 'False', 'FALSE'):
        return False
    if re.fullmatch(r'[-+]?\d+', text):
        return int(text)
    if re.fullmatch(r'[-+]?(\d+\.\d*|\.\d+|\d+)([eE][-+]?\d+)?', text):
        return float(text)
    return text


def _pair(text):
    key, sep, value = text.partition(':')
    if not sep or (value and not value[0].isspace()):
        return None
    return _scalar(key), value.strip()


def _value(text, where):
    if text.startswith('['):
        if not text.endswith(']'):
            raise YamlError('%s: a list that does not close on its line' % where)
        return [_scalar(item) for item in _split_items(text[1:-1])]
    if text.startswith('{'):
        if not text.endswith('}'):
            raise YamlError('%s: a mapping that does not close on its line' % where)
        mapping = {}
        for item in _split_items(text[1:-1]):
            pair = _pair(item)
            if pair is None:
                raise YamlError('%s: %r is not "key: value"' % (where, item))
            mapping[pair[0]] = _scalar(pair[1])
        return mapping
    return _scalar(text)


def _block(lines, where):
    """The value of an indented block: a list of '- item' lines or a mapping of 'k: v' lines."""
    if all(text.startswith('- ') or text == '-' for _, text in lines):
        return [_value(text[1:].strip(), '%s line %d' % (where, n)) for n, text in lines]
    mapping = {}
    for n, text in lines:
        pair = _pair(text)
        if pair is None or pair[1] == '':
            raise YamlError('%s line %d: %r is neither "- item" nor "key: value" (nested blocks '
                            'need PyYAML: pip install pyyaml)' % (where, n, text))
        mapping[pair[0]] = _value(pair[1], '%s line %d' % (where, n))
    return mapping


def parse_simple_yaml(text, where='data.yaml', keys=None):
    """The top-level mapping of a data.yaml in the subset described above.

    Args:
      text: the file's text; where: its name for messages.
      keys: the top-level keys to parse (others are skipped unread); None: all.
    Raises:
      YamlError: a line outside the subset, naming the file and line.
    """
    result, entries = {}, []
    for n, raw in enumerate(text.splitlines(), 1):
        line = _strip_comment(raw.replace('\t', '    '))
        if not line.strip() or line.strip() in ('---', '...'):
            continue
        indent = len(line) - len(line.lstrip())
        if indent == 0:
            pair = _pair(line)
            if pair is None:
                raise YamlError('%s line %d: %r is not "key: value" (pip install pyyaml to read '
                                'any YAML)' % (where, n, line))
            entries.append([pair[0], pair[1], n, []])
        elif entries:
            entries[-1][3].append((n, line.strip()))
        else:
            raise YamlError('%s line %d: indented text before any key' % (where, n))
    for key, value, n, block in entries:
        if keys is not None and key not in keys:
            continue
        place = '%s line %d' % (where, n)
        if value in ('|', '>', '|-', '>-'):  # block scalars (e.g. a download script)
            result[key] = ('\n' if value[0] == '|' else ' ').join(text for _, text in block) + (
                '' if value.endswith('-') else '\n')
        elif value:
            if block:
                raise YamlError('%s: key %r has a value and an indented block' % (place, key))
            result[key] = _value(value, place)
        else:
            result[key] = _block(block, where) if block else None
    return result


def load_data_yaml(path, keys=None):
    """The top-level mapping of the YAML file `path` (PyYAML if installed, else
    `parse_simple_yaml`, reading `keys` only).

    Raises:
      OSError: the file cannot be read.
      YamlError: it is not YAML this can read, or not a mapping.
    """
    with open(path, 'r', encoding='utf-8') as f:
        text = f.read()
    try:
        import yaml
    except ImportError:
        data = parse_simple_yaml(text, path, keys)
    else:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise YamlError('%s is not valid YAML (%s)' % (path, ' '.join(str(e).split())))
    if not isinstance(data, dict):
        raise YamlError('%s holds no "key: value" mapping' % path)
    return data
