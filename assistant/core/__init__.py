"""What every room shares; imports no other room.

`frames`: what a turn emits; `errors`: the one error tree; `signals`: what a shopper and their friends did.
"""
