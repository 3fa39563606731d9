"""The one exception type for bad input.

Inputs are checked once, at the edge (files read, configs parsed). The CLI turns a
``BertlabError`` into a single line on stderr and exit code 2.
"""


class BertlabError(Exception):
    """Bad input from the user: a file, a column, a label, a config value.

    The message names the file / row / column and says what to do about it.
    """
