"""PEPNet: main DEEP groups -> EPNet (domain gate) -> PPNet-gated task towers.

With `epnet: false` the towers read the main groups directly; with `ppnet: false` they are
plain task towers; both off is a Shared-Bottom without a bottom (for ablations).
"""
from mtrec.errors import ConfigError
from mtrec.layers.pepnet import EPNet, PPNet
from mtrec.layers.tower import TaskTower
from mtrec.models.base import MultiTaskModel


class PEPNet(MultiTaskModel):

    def __init__(self, pipeline, feature_set, **kwargs):
        super().__init__(pipeline, feature_set, **kwargs)
        p = self.params
        self.epnet = (EPNet(p.gate_hidden_dim, p.gamma, self.l2_regularization, name="epnet")
                      if p.epnet else None)
        self.ppnet = None
        if p.ppnet:
            # Config validation (mtrec.models.checks.check_pepnet) checked that the towers'
            # dnns share activation, use_bn and one dropout_ratio.
            dnns = [t.dnn for t in self.tower_configs]
            dropout = list(dnns[0].dropout_ratio)
            try:
                self.ppnet = PPNet([list(d.hidden_units) for d in dnns], dnns[0].activation,
                                   dnns[0].use_bn, dropout[0] if dropout else 0.0,
                                   p.gate_hidden_dim, p.gamma, self.l2_regularization,
                                   name="ppnet")
            except ValueError as e:
                raise ConfigError(f"pepnet: {e}") from None

    def make_tower(self, tower):
        if not self.params.ppnet:
            return super().make_tower(tower)
        # PPNet runs the towers' hidden layers; what remains is the logit layer.
        return TaskTower(num_class=tower.num_class, l2_regularization=self.l2_regularization,
                         name=f"tower_{tower.tower_name}")

    def tower_inputs(self, groups, training):
        x = self.main_tensor(groups)
        if self.epnet is not None:
            x = self.epnet([self.domain_embedding(groups), x])
        if self.ppnet is not None:
            prior = self.group_tensor(groups, [self.params.prior_group_name])
            return self.ppnet([x, prior], training=training)
        return [x] * len(self.tower_configs)
