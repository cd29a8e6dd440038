"""Key slots and the one policy that every container (sealed files, repositories) follows.

* :mod:`~e2ebackup.keyring.slots`: the slot format: one data key wrapped once per credential.
* :mod:`~e2ebackup.keyring.vault_slot`: the public part of a key-vault slot.
* :mod:`~e2ebackup.keyring.policy`: which slot a credential opens, in which order, how first
  slots are made, how a password changes and what a rotation keeps; the only module that talks
  to a key vault about slots. Containers give it their slots through a ``SlotStore``.
"""
