"""Validation of data_config: the input columns, labels, sample weight and separator."""
from mtrec.config.source import Problems


def check_data(pipeline, p: Problems) -> dict:
    """{input_name: its input_fields entry}, reporting bad columns."""
    data = pipeline.data_config
    inputs = {}
    if not data.input_fields:
        p.error("data_config has no input_fields; list the columns of your rows.", "data_config")
    for field in data.input_fields:
        if not field.input_name:
            p.error("an input_fields entry has no input_name.", "input_fields")
        elif field.input_name in inputs:
            p.error(f"input_fields: {field.input_name!r} is listed twice.", "input_name",
                    field.input_name)
        inputs[field.input_name] = field
    if data.batch_size == 0:
        p.error("data_config.batch_size must be at least 1.", "batch_size")
    for name in data.label_fields:
        if name not in inputs:
            p.error(f"label_fields: {name!r} is not an input field.", "label_fields", name)
    if data.sample_weight and data.sample_weight not in inputs:
        p.error(f"sample_weight: {data.sample_weight!r} is not an input field.", "sample_weight")
    if data.selected_cols:
        for name in data.selected_cols.split(","):
            if name.strip() not in inputs:
                p.error(f"selected_cols: {name.strip()!r} is not an input field.", "selected_cols")
    if len(data.separator) != 1 and data.input_type == data.CSVInput:
        p.error(f"data_config.separator must be one character, got {data.separator!r}.",
                "separator")
    return inputs
