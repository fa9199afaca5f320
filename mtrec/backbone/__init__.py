"""The component backbone: a config's blocks as a directed acyclic graph of registered
layers (docs/backbone.md).

  specs.py      the structure and widths of values between blocks (TF-free)
  shapes.py     each layer's shape rule: (params, input spec) -> output spec (TF-free)
  catalogue.py  the one table of layers a config can name: params, shape rule, builder
  functions.py  the config's lambdas (input_fn, extra_input_fn, lambda), parsed from a
                whitelist and never evaluated (TF-free)
  plan.py       plan(): the blocks resolved, ordered and checked (TF-free; config
                validation runs it)
  builders.py   params -> Keras layer, for the catalogue's typed layers
  layer.py      Backbone, the Keras layer that runs the plan

Importing this package imports no TensorFlow; import the Keras layer from
mtrec.backbone.layer.
"""
