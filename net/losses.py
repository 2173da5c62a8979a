"""SSD training losses: softmax cross-entropy with per-image hard negative mining, smooth L1.

Plain TensorFlow ops only (no tf.compat.v1.losses helpers, which would register losses in a
collection and change how distribution strategies scale them). All values are means over the
batch given to one call (one replica's batch under MirroredStrategy); the caller decides how
replicas are combined.
"""
import tensorflow as tf

# Weight of the conv4_3 L2-normalisation scale variable in the weight decay (as the original).
CONV4_3_SCALE_DECAY_WEIGHT = 0.1


def smooth_l1(x, sigma=1.0):
    """Elementwise smooth L1: 0.5 * (sigma * x)^2 if |x| < 1 / sigma^2, else |x| - 0.5 / sigma^2.

    Args:
      x: float tensor of any shape (prediction - target).
    Returns:
      float tensor of the same shape.
    """
    sigma2 = float(sigma) * float(sigma)
    abs_x = tf.abs(x)
    return tf.where(abs_x < 1.0 / sigma2, 0.5 * sigma2 * tf.square(x), abs_x - 0.5 / sigma2)


def hard_negative_mask(negative_scores, negative, num_positives, negative_ratio=3.0):
    """Selects, per image, the floor(negative_ratio * positives) highest-scoring negatives.

    Args:
      negative_scores: float32 [B, A], higher = harder (e.g. background cross-entropy).
      negative: bool [B, A], anchors that may be selected (target 0, not ignored).
      num_positives: int32 [B], positive anchors per image.
      negative_ratio: negatives per positive.
    Returns:
      bool [B, A]: exactly min(floor(ratio * num_positives[b]), negatives in image b) anchors
      of image b are True; among equal scores the lower anchor index is taken first.
    """
    with tf.name_scope('hard_negative_mask'):
        num_negatives = tf.reduce_sum(tf.cast(negative, tf.int32), axis=1)
        budget = tf.cast(tf.floor(float(negative_ratio) * tf.cast(num_positives, tf.float32)),
                         tf.int32)
        budget = tf.minimum(budget, num_negatives)  # [B]
        scores = tf.where(negative, tf.stop_gradient(negative_scores), float('-inf'))
        shape = tf.shape(scores)
        batch, anchors = shape[0], shape[1]
        _, order = tf.nn.top_k(scores, k=anchors, sorted=True)  # stable: lower index first
        # rank[b, a] = position of anchor a in image b's descending order, via one
        # inverse permutation of the flattened [B * A] order.
        offsets = tf.range(batch)[:, None] * anchors
        flat_rank = tf.math.invert_permutation(tf.reshape(order + offsets, [-1]))
        rank = tf.reshape(flat_rank, shape) - offsets
        return tf.logical_and(negative, rank < budget[:, None])


def ssd_losses(cls_logits, loc_preds, cls_targets, loc_targets, negative_ratio=3.0, sigma=1.0):
    """The SSD multibox loss of one batch.

    Classification: softmax cross-entropy over all positive anchors and, per image,
    floor(negative_ratio * its positives) hard negatives (anchors with target 0 of highest
    background cross-entropy, i.e. lowest background probability); ignored anchors (-1)
    never count. Normalised as the original: mean over the selected anchors of the batch, times
    (negative_ratio + 1).
    Localisation: smooth L1 (sigma) summed over the 4 coordinates, mean over positive anchors.
    With no positives in the batch both losses are finite (no negatives are mined, loc_loss 0).

    Args:
      cls_logits: float [B, A, C] class logits (class 0 = background).
      loc_preds: float [B, A, 4] predicted codes [ty, tx, th, tw].
      cls_targets: int [B, A], > 0 positive class, 0 background, -1 ignored.
      loc_targets: float [B, A, 4] target codes (anything where not positive).
      negative_ratio: hard negatives per positive, per image.
      sigma: smooth L1 sigma.
    Returns:
      dict of float32 scalars: cls_loss, loc_loss, num_positives (batch total),
      num_negatives (mined negatives, batch total), accuracy (argmax == target over positive
      anchors; 0 without positives).
    """
    with tf.name_scope('ssd_losses'):
        cls_logits = tf.cast(cls_logits, tf.float32)
        loc_preds = tf.cast(loc_preds, tf.float32)
        loc_targets = tf.cast(loc_targets, tf.float32)
        cls_targets = tf.cast(cls_targets, tf.int32)

        positive = cls_targets > 0
        negative = tf.equal(cls_targets, 0)
        cross_entropy = tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.maximum(cls_targets, 0), logits=cls_logits)  # [B, A]
        positives_per_image = tf.reduce_sum(tf.cast(positive, tf.int32), axis=1)
        # On a negative anchor the cross-entropy is the background loss -log p(background).
        mined = hard_negative_mask(cross_entropy, negative, positives_per_image, negative_ratio)
        selected = tf.logical_or(positive, mined)

        num_positives = tf.reduce_sum(tf.cast(positive, tf.float32))
        num_negatives = tf.reduce_sum(tf.cast(mined, tf.float32))
        num_selected = num_positives + num_negatives
        cls_loss = (tf.reduce_sum(tf.where(selected, cross_entropy, 0.0))
                    / tf.maximum(num_selected, 1.0) * (float(negative_ratio) + 1.0))

        per_anchor = tf.reduce_sum(smooth_l1(loc_preds - loc_targets, sigma), axis=-1)
        loc_loss = (tf.reduce_sum(tf.where(positive, per_anchor, 0.0))
                    / tf.maximum(num_positives, 1.0))

        predicted = tf.argmax(cls_logits, axis=-1, output_type=tf.int32)
        correct = tf.logical_and(positive, tf.equal(predicted, cls_targets))
        accuracy = tf.reduce_sum(tf.cast(correct, tf.float32)) / tf.maximum(num_positives, 1.0)
        return {
            'cls_loss': tf.identity(cls_loss, name='cls_loss'),
            'loc_loss': tf.identity(loc_loss, name='loc_loss'),
            'num_positives': tf.identity(num_positives, name='num_positives'),
            'num_negatives': tf.identity(num_negatives, name='num_negatives'),
            'accuracy': tf.identity(accuracy, name='accuracy'),
        }


def l2_regularization(variables, weight_decay):
    """Weight decay as the original: weight_decay * sum of tf.nn.l2_loss(v) (= sum(v^2) / 2).

    Skips batch-norm variables (name contains '_bn' or 'BatchNorm'); the conv4_3 L2-norm
    scale (name contains 'conv4_3_scale') counts with weight 0.1.

    Args:
      variables: iterable of variables (e.g. tf.compat.v1.trainable_variables()).
      weight_decay: float.
    Returns:
      float32 scalar (0 when no variable qualifies).
    """
    with tf.name_scope('l2_regularization'):
        terms = []
        for variable in variables:
            name = variable.name
            if '_bn' in name or 'BatchNorm' in name:
                continue
            term = tf.nn.l2_loss(tf.cast(variable, tf.float32))
            if 'conv4_3_scale' in name:
                term = term * CONV4_3_SCALE_DECAY_WEIGHT
            terms.append(term)
        if not terms:
            return tf.constant(0.0, tf.float32)
        return tf.multiply(float(weight_decay), tf.add_n(terms), name='l2_loss')
