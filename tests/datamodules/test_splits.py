def test_source_null_from_the_command_line_means_no_source():
    """jsonargparse passes ``--data.init_args.splits.source null`` to the dataclass as the string 'None'."""
    from datamodules.splits import Splits

    assert Splits(source="None").source is None and Splits(source="null").source is None
