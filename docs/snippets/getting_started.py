import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import ember


class Classifier(ember.Module):
    def __init__(self, lr: float = 1e-2):
        super().__init__()
        self.save_hyperparameters()  # self.hparams.lr; saved in checkpoints, sent to loggers
        self.net = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 2))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("val_loss", F.cross_entropy(logits, y), prog_bar=True)
        self.log("val_acc", (logits.argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def make_data(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 20, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long()  # a rule the model can learn
    return TensorDataset(x, y)


if __name__ == "__main__":
    ember.seed_everything(0)
    train = DataLoader(make_data(2048, 0), batch_size=64, shuffle=True)
    val = DataLoader(make_data(512, 1), batch_size=256)
    trainer = ember.Trainer(max_epochs=5)
    trainer.fit(Classifier(), train, val)
    print(trainer.callback_metrics["val_acc"])            # tensor(0.9...)
    print(trainer.checkpoint_callback.best_model_path)    # ember_logs/version_0/checkpoints/epoch=4-step=160.ckpt
    print(trainer.validate(dataloaders=val, verbose=False))
