"""Restoring pretrained weights into the SSD graph (Estimator / Scaffold init_fn:
`build_restore_fn`), and what a full SSD checkpoint says about its model
(`ssd_checkpoint_identity`, `describe_identity`).

Names: a model variable ``<model_scope>/<rest>`` (e.g. ``ssd300/conv1/conv1_1/weights``) is
looked up in the checkpoint as ``<checkpoint_model_scope>/<rest>`` (``vgg_16/conv1/conv1_1/
weights``); a checkpoint that calls layer variables ``kernel``/``bias`` (Keras / tf.layers style)
instead of ``weights``/``biases`` is accepted too. A checkpoint in the original code's layout
(original_layout.py: TF1 or TF 2.x names) is read through ``original_name_map``
instead, whatever ``checkpoint_model_scope`` says, so ``train_ssd.py --checkpoint_path=<original
checkpoint> --checkpoint_exclude_scopes=`` fine-tunes from all of it.

Which variables are restored (semantics used by train_ssd.py):
  * variables under one of ``exclude_scopes`` are never restored (SSD's new layers: the original's
    default ``--checkpoint_exclude_scopes='ssd300/multibox_head, ssd300/additional_layers,
    ssd300/conv4_3_scale'``);
  * every other model variable must be in the checkpoint with the same shape; a shape mismatch
    is always an error, a variable absent from the checkpoint is an error unless
    ``ignore_missing_vars`` (train_ssd.py's default is True, as in the original);
  * at least one variable must be restored (otherwise the scopes are wrong: error).
Every model variable not restored (excluded or missing) is logged and listed in the report, so
with train_ssd.py's defaults the backbone (30 variables) is restored and the rest listed.

ResNet backbones (net/backbones.py) need no name map: their variables are TF-slim's resnet_v1
names under the model scope, so TF-slim's published resnet_v1_50.ckpt / resnet_v1_101.ckpt
restore with checkpoint_model_scope 'resnet_v1_50' / 'resnet_v1_101' (the backbone's default),
batch-norm moving statistics included (they are model variables).

Importing this module has no side effects.
"""
import re

import tensorflow as tf

from common import defaults
from common.console import parse_comma_list
from net import backbones
from net import ssd_net
from utility.checkpoints.locate import resolve_checkpoint
from utility.checkpoints.original_layout import join_scope, original_name_map

# Alternative last-component names tried when the checkpoint uses another layer convention.
_NAME_ALTERNATIVES = {'weights': ('kernel',), 'biases': ('bias',),
                      'kernel': ('weights',), 'bias': ('biases',)}


def _parse_scopes(exclude_scopes):
    return [scope.rstrip('/') for scope in parse_comma_list(exclude_scopes)]


def _in_scope(name, scope):
    return name == scope or name.startswith(scope + '/')


def _variable_name(variable):
    # MirroredVariable.name is its primary component's name ('<name>:0').
    return variable.name.split(':')[0]


def _checkpoint_names(name, model_scope, checkpoint_model_scope):
    """Checkpoint names to try for model variable `name`, preferred first."""
    if model_scope:
        if not _in_scope(name, model_scope):
            return []
        rest = name[len(model_scope) + 1:]
    else:
        rest = name
    base = checkpoint_model_scope + '/' + rest if checkpoint_model_scope else rest
    names = [base]
    head, _, last = base.rpartition('/')
    for alternative in _NAME_ALTERNATIVES.get(last, ()):
        names.append(head + '/' + alternative if head else alternative)
    return names


def _component_variables(variable):
    """The per-device variables of a distributed (e.g. Mirrored) variable; [variable] otherwise."""
    strategy = tf.distribute.get_strategy()
    try:
        components = strategy.experimental_local_results(variable)
    except (ValueError, TypeError, AttributeError):
        components = (variable,)
    return list(components) or [variable]


def _model_variables(model_scope):
    """Model variables (slim's MODEL_VARIABLES: weights, biases, conv4_3 scale) under the scope.

    Optimizer slots and the global step are not model variables, so they are never looked up.
    """
    variables = tf.compat.v1.model_variables()
    if not variables:
        variables = tf.compat.v1.global_variables()
    if model_scope:
        variables = [v for v in variables if _in_scope(_variable_name(v), model_scope)]
    return variables


def build_restore_fn(checkpoint_path, model_scope=defaults.MODEL_SCOPE,
                     checkpoint_model_scope=defaults.VGG16_CHECKPOINT_SCOPE,
                     exclude_scopes=None, ignore_missing_vars=False, var_list=None):
    """Builds the restore of pretrained weights for tf.compat.v1.train.Scaffold(init_fn=...).

    Call it while building the graph (in model_fn, after the network exists); the returned
    init_fn runs the restore once the variables are initialized.

    Args:
      checkpoint_path: checkpoint directory, prefix or file (see resolve_checkpoint). Empty or
        None: nothing is restored (training from scratch); init_fn is None.
      model_scope: scope of the model's variables ('ssd300'), replaced by
        `checkpoint_model_scope` ('vgg_16') to get checkpoint names. Empty: no prefix on that
        side.
      exclude_scopes: model scopes never restored: a comma-separated string or a list
        ('ssd300/multibox_head, ssd300/additional_layers, ssd300/conv4_3_scale').
      ignore_missing_vars: if False, a (non-excluded) variable absent from the checkpoint is an
        error; if True it keeps its initial value and is listed in the report.
      var_list: variables to consider; default: the model variables under `model_scope`
        (tf.compat.v1.model_variables(), so optimizer slots and global_step are skipped).
    Returns:
      (init_fn, report). init_fn(scaffold, session) restores the weights (None when
      checkpoint_path is empty). report: dict with 'checkpoint' (prefix or None), 'restored'
      (model variable names restored), 'name_map' ({model name: checkpoint name}),
      'excluded', 'missing' (absent from the checkpoint) and 'not_restored' (excluded +
      missing, sorted); 'reshaped': the heads of a whole-SSD checkpoint left out because
      their shape differs (another class count) are in 'not_restored' too.
    Raises:
      ValueError: unreadable checkpoint, a shape mismatch outside the multibox heads of a
        whole-SSD checkpoint (names the variable and both shapes),
        a missing variable without ignore_missing_vars, or nothing to restore.
    """
    scopes = _parse_scopes(exclude_scopes)
    variables = list(var_list) if var_list is not None else _model_variables(model_scope)
    names = [_variable_name(v) for v in variables]
    if not checkpoint_path:
        tf.compat.v1.logging.info('No checkpoint_path: all %d model variables keep their '
                                  'initial values (training from scratch).', len(variables))
        return None, {'checkpoint': None, 'restored': [], 'name_map': {}, 'excluded': [],
                      'missing': sorted(names), 'reshaped': [], 'not_restored': sorted(names)}
    if not variables:
        raise ValueError('No model variables under scope %r to restore into; build the network '
                         'before calling build_restore_fn, or fix model_scope.' % model_scope)
    prefix = resolve_checkpoint(checkpoint_path)
    checkpoint_shapes = tf.compat.v1.train.NewCheckpointReader(prefix).get_variable_to_shape_map()

    # A full SSD checkpoint of the original code: its own names, whatever checkpoint_model_scope.
    layout, original_scope, original_map = original_name_map(checkpoint_shapes, model_scope)
    if layout is not None:
        tf.compat.v1.logging.info('%s is an original SSD.TensorFlow checkpoint (%s layout, scope '
                                  '%r); mapping its names.', prefix, layout, original_scope)
        checkpoint_model_scope = original_scope

    # A whole SSD (its heads are in the checkpoint): a head of another shape (another class
    # count or anchors per cell) keeps its initial values and is listed, not an error.
    full_ssd = any('/multibox_head/' in name for name in checkpoint_shapes)
    name_map, to_restore, excluded, missing, mismatches = {}, [], [], [], []
    reshaped = {}
    for name, variable in zip(names, variables):
        if any(_in_scope(name, scope) for scope in scopes):
            excluded.append(name)
            continue
        if layout is not None:
            found = [original_map[name]] if name in original_map else []
        else:
            found = [c for c in _checkpoint_names(name, model_scope, checkpoint_model_scope)
                     if c in checkpoint_shapes]
        if not found:
            missing.append(name)
            continue
        checkpoint_name = found[0]
        model_shape = variable.get_shape().as_list()
        if list(checkpoint_shapes[checkpoint_name]) != model_shape:
            if full_ssd and _in_scope(name, join_scope(model_scope, 'multibox_head')):
                reshaped[name] = (model_shape, list(checkpoint_shapes[checkpoint_name]))
                continue
            mismatches.append('%s %s vs checkpoint %s %s' % (
                name, model_shape, checkpoint_name, list(checkpoint_shapes[checkpoint_name])))
            continue
        name_map[name] = checkpoint_name
        to_restore.append((checkpoint_name, variable))

    if mismatches:
        raise ValueError('Shape mismatch between the model and checkpoint %s: %s. Use a '
                         'checkpoint of the same architecture, or add the layer\'s scope to '
                         'exclude_scopes (--checkpoint_exclude_scopes).'
                         % (prefix, '; '.join(mismatches)))
    if missing and not ignore_missing_vars:
        raise ValueError('%d model variables are not in checkpoint %s (looked up as %s/...), '
                         'e.g. %s. Add their scopes to exclude_scopes '
                         '(--checkpoint_exclude_scopes) or set ignore_missing_vars '
                         '(--ignore_missing_vars) to keep their initial values.'
                         % (len(missing), prefix, checkpoint_model_scope,
                            ', '.join(missing[:5])))
    if not to_restore:
        raise ValueError('No model variable of scope %r was found in checkpoint %s under scope '
                         '%r; check --model_scope/--checkpoint_model_scope (list the checkpoint '
                         'with `python3 -m tools.convert_vgg_weights --list %s`).'
                         % (model_scope, prefix, checkpoint_model_scope, prefix))

    # One Saver per device copy: a MirroredVariable is restored into every replica's component
    # (a Saver given the MirroredVariable itself would restore only the primary copy).
    per_copy = {}
    for checkpoint_name, variable in to_restore:
        for index, component in enumerate(_component_variables(variable)):
            per_copy.setdefault(index, {})[checkpoint_name] = component
    savers = [tf.compat.v1.train.Saver(per_copy[index], reshape=False, sharded=False,
                                       allow_empty=False, name='restore_pretrained_%d' % index)
              for index in sorted(per_copy)]

    not_restored = sorted(excluded + missing + list(reshaped))
    restored = sorted(name_map)

    def why(name):
        if name in reshaped:
            return '%s (shape %s, checkpoint %s)' % ((name,) + tuple(reshaped[name]))
        return ('%s (excluded)' if name in excluded else '%s (missing)') % name

    tf.compat.v1.logging.info('Restoring %d of %d model variables from %s.',
                              len(restored), len(variables), prefix)
    if not_restored:
        tf.compat.v1.logging.info('%d model variables are NOT restored (keep their initial '
                                  'values):\n  %s', len(not_restored),
                                  '\n  '.join(why(n) for n in not_restored))
    report = {'checkpoint': prefix, 'restored': restored, 'name_map': name_map,
              'excluded': sorted(excluded), 'missing': sorted(missing),
              'reshaped': sorted(reshaped), 'not_restored': not_restored}

    def init_fn(scaffold, session):
        del scaffold
        for saver in savers:
            saver.restore(session, prefix)
        tf.compat.v1.logging.info('Restored %d variables from %s.', len(restored), prefix)

    return init_fn, report


# ----------------------------------------------------------------------------- identity

# '<model scope>/multibox_head/{loc,cls}_<i>/biases': the heads whose shapes give the class
# count and the anchors per cell.
_HEAD_BIAS = re.compile(r'^(?P<scope>.+)/multibox_head/(?P<kind>loc|cls)_(?P<index>\d+)/biases$')


def ssd_checkpoint_identity(checkpoint):
    """What a full SSD checkpoint says about the model it holds, read from its variable
    names and shapes (nothing else: no params.json).

    Args:
      checkpoint: a checkpoint prefix (or directory / file: `resolve_checkpoint`'s rules),
        or its {variable name: shape} map. An original SSD.TensorFlow checkpoint is read
        through its name map (`original_name_map`).
    Returns:
      None when it holds no multibox heads (a backbone checkpoint, or not an SSD); else a dict:
      'model_scope' (the scope above multibox_head, e.g. 'ssd300'), 'backbone' (the
      net/backbones.py name whose layers are exactly the checkpoint's, None when no
      registered layout fits), 'num_classes' (background included: channels of the class
      head of the first source map / its anchors per cell) and 'anchors_per_location' (list,
      one per head: loc biases / 4).
    Raises:
      ValueError: the heads disagree with each other (a damaged or foreign checkpoint).
    """
    if isinstance(checkpoint, dict):
        shapes = checkpoint
    else:
        prefix = resolve_checkpoint(checkpoint)
        shapes = tf.compat.v1.train.NewCheckpointReader(prefix).get_variable_to_shape_map()
    layout, _, name_map = original_name_map(shapes)
    if layout is not None:
        shapes = {project: shapes[original] for project, original in name_map.items()}
    heads = {}
    for name, shape in shapes.items():
        match = _HEAD_BIAS.match(name)
        if match and len(shape) == 1:
            heads.setdefault(match.group('scope'), {})[
                (match.group('kind'), int(match.group('index')))] = int(shape[0])
    if not heads:
        return None
    scope = sorted(heads, key=lambda s: (-len(heads[s]), s))[0]
    sizes = heads[scope]
    count = max(index for _, index in sizes) + 1
    anchors = [sizes.get(('loc', i), 0) // 4 for i in range(count)]
    classes = {sizes[('cls', i)] // anchors[i] for i in range(count)
               if ('cls', i) in sizes and anchors[i]}
    if 0 in anchors or len(classes) != 1:
        raise ValueError('The multibox heads under %s/multibox_head in %s do not fit together '
                         '(loc/cls heads %s); the checkpoint is damaged or not an SSD300 of this '
                         'project: pass another checkpoint.'
                         % (scope, checkpoint if not isinstance(checkpoint, dict) else 'the '
                            'checkpoint', sorted(sizes)))
    relative = [n[len(scope) + 1:] for n in shapes if n.startswith(scope + '/')]
    backbone = backbones.identify_backbone(
        relative, ignore_scopes=ssd_net.SSD_LAYER_SCOPES + tuple(
            s for b in backbones.BACKBONES for s in backbones.get_backbone(b).added_scopes))
    return {'model_scope': scope, 'backbone': backbone, 'num_classes': classes.pop(),
            'anchors_per_location': anchors}


def describe_identity(identity):
    """'a resnet18 SSD (scope ssd300) with 3 classes (background included)'."""
    return 'a %s SSD (scope %s) with %d classes (background included)' % (
        identity.get('backbone') or 'unrecognised-backbone', identity['model_scope'],
        identity['num_classes'])
