"""Query2Label (Liu et al., 2021): C learnable label queries cross-attend to the trunk's
feature map through a small transformer; one linear score per query.

IGNORE masks with a CAM, which this model does not have; SPEC 2 (Query2Label variant) builds
one from the last decoder layer's cross-attention of each label's query over the feature
cells (averaged over heads), weighted into the trunk's features and averaged over channels.
The authors never published this model, so the layout below is ours: DETR's post-norm
encoder layers, decoder layers without self-attention among the queries (Query2Label's
released default), the queries themselves as the decoder's input, a final LayerNorm and
Query2Label's group-wise linear classifier.
"""
import math

import torch
from torch import nn

from ..errors import SPMLError
from .classifier import Classifier
from .position import sine_position_embedding


class Attention(nn.Module):
    """Multi-head attention that also returns its weights, averaged over heads.

    The scores, the softmax and the weighted sum run in float32 even under autocast: in fp16
    a product of two large projections overflows (65504) and a softmax over inf is NaN. The
    projections stay in the autocast dtype, where the time goes.
    """

    def __init__(self, dim, heads, dropout):
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value, self.out = (nn.Linear(dim, dim) for _ in range(4))
        self.dropout = nn.Dropout(dropout)

    def split_heads(self, x):
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # (B, heads, L, dim / heads)

    def forward(self, query, key, value):
        """query (B, Lq, dim), key and value (B, Lk, dim) -> (B, Lq, dim), weights (B, Lq, Lk)."""
        q, k, v = self.split_heads(self.query(query)), self.split_heads(self.key(key)), self.split_heads(self.value(value))
        with torch.autocast(device_type=query.device.type, enabled=False):
            scores = (q.float() / math.sqrt(q.shape[-1])) @ k.float().transpose(-2, -1)
            weights = scores.softmax(dim=-1)
            mixed = self.dropout(weights) @ v.float()
        return self.out(mixed.transpose(1, 2).flatten(2)), weights.mean(dim=1)


class FeedForward(nn.Sequential):
    def __init__(self, dim, ffn_dim, dropout):
        super().__init__(nn.Linear(dim, ffn_dim), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(ffn_dim, dim))


class EncoderLayer(nn.Module):
    """Self-attention over the feature cells (positions added to queries and keys), then a
    feed-forward block; each followed by dropout, the residual and LayerNorm (post-norm)."""

    def __init__(self, dim, heads, ffn_dim, dropout):
        super().__init__()
        self.attention = Attention(dim, heads, dropout)
        self.feed_forward = FeedForward(dim, ffn_dim, dropout)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, cells, position):
        located = cells + position
        cells = self.norm1(cells + self.dropout(self.attention(located, located, cells)[0]))
        return self.norm2(cells + self.dropout(self.feed_forward(cells)))


class DecoderLayer(nn.Module):
    """Cross-attention from the label queries to the feature cells (positions added to the
    keys), then a feed-forward block; post-norm as in the encoder. No self-attention among
    the queries: Query2Label's released transformer removes it by default."""

    def __init__(self, dim, heads, ffn_dim, dropout):
        super().__init__()
        self.cross_attention = Attention(dim, heads, dropout)
        self.feed_forward = FeedForward(dim, ffn_dim, dropout)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, labels, cells, position):
        """-> labels (B, C, dim), cross-attention weights (B, C, cells) averaged over heads."""
        attended, weights = self.cross_attention(labels, cells + position, cells)
        labels = self.norm1(labels + self.dropout(attended))
        return self.norm2(labels + self.dropout(self.feed_forward(labels))), weights


class GroupWiseLinear(nn.Module):
    """One weight vector and one bias per class: logit c = <w_c, label embedding c> + b_c."""

    def __init__(self, num_classes, dim):
        super().__init__()
        bound = 1 / math.sqrt(dim)
        self.weight = nn.Parameter(torch.empty(num_classes, dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(num_classes).uniform_(-bound, bound))

    def forward(self, labels):
        return (labels * self.weight).sum(dim=-1) + self.bias


class Query2Label(Classifier):
    """Trunk -> 1x1 projection to `hidden_dim` -> encoder layers over the cells -> decoder
    layers whose C label queries cross-attend to them -> group-wise linear logits."""

    def __init__(self, backbone, num_classes, pretrained="", channels_last=False, output_stride=32, hidden_dim=2048,
                 heads=4, encoder_layers=1, decoder_layers=2, ffn_dim=8192, dropout=0.1):
        if hidden_dim % heads or hidden_dim % 4:
            raise SPMLError(f"model.q2l_hidden_dim ({hidden_dim}) must be a multiple of 4 (the sine position "
                            f"embedding) and of model.q2l_heads ({heads})")
        if decoder_layers < 1:
            raise SPMLError("model.q2l_decoder_layers must be >= 1: the CAM is the last decoder layer's attention")
        super().__init__(backbone, pretrained, channels_last, output_stride)
        self.hidden_dim = hidden_dim
        self.projection = nn.Conv2d(self.trunk_width, hidden_dim, kernel_size=1)
        self.encoder = nn.ModuleList(EncoderLayer(hidden_dim, heads, ffn_dim, dropout) for _ in range(encoder_layers))
        self.decoder = nn.ModuleList(DecoderLayer(hidden_dim, heads, ffn_dim, dropout) for _ in range(decoder_layers))
        for parameter in list(self.encoder.parameters()) + list(self.decoder.parameters()):
            if parameter.dim() > 1:  # DETR's initialisation of the transformer's matrices
                nn.init.xavier_uniform_(parameter)
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.label_queries = nn.Parameter(torch.randn(num_classes, hidden_dim))
        self.classifier = GroupWiseLinear(num_classes, hidden_dim)
        self.to(memory_format=self.memory_format)

    def forward_head(self, features):
        batch, _, height, width = features.shape
        cells = self.projection(features).flatten(2).transpose(1, 2)  # (B, h*w, hidden), row-major cells
        position = sine_position_embedding(height, width, self.hidden_dim, features.device)
        for layer in self.encoder:
            cells = layer(cells, position)
        labels = self.label_queries.expand(batch, -1, -1)
        for layer in self.decoder:
            labels, attention = layer(labels, cells, position)
        logits = self.classifier(self.decoder_norm(labels))
        # SPEC 2: the last cross-attention map weighted into the trunk's features, averaged over
        # channels, i.e. the attention times the channel mean of the features at each cell
        cam = attention.unflatten(2, (height, width)) * features.float().mean(dim=1, keepdim=True)
        return {"logits": logits, "cam": cam}

    def head_parameters(self):
        """Everything outside the trunk (new, randomly initialised): the projection, the
        transformer, the queries and the classifier."""
        trunk = {id(parameter) for parameter in self.trunk.parameters()}
        return [parameter for parameter in self.parameters() if id(parameter) not in trunk]
