"""
Payments in points between p2pblob nodes.

Each node has an Ed25519 key pair (L{keys}).  A payer pays a payee with
signed I{cumulative} cheques (L{cheques}): each carries everything promised
so far and a sequence number, so a lost, repeated or replayed cheque can
neither pay twice nor be forged.  The L{ledger} (SQLite, one transaction per
change) keeps the balance, reservations, cheques and what peers owe us,
consistent after a crash at any point.  L{wallet.Wallet} is the node's
L{p2pblob.interfaces.IWallet}; L{rates.PaymentRateManager} holds its prices
(free by default); L{exchange} tells peers our payment key and learns
theirs.  Amounts are exact integers of micro-points inside (L{units}).

Modules are imported from where they are (C{p2pblob.wallet.wallet}, ...),
so that importing one does not import them all.
"""
