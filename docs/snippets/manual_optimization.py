import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import ember


class GAN(ember.Module):
    def __init__(self):
        super().__init__()
        self.automatic_optimization = False  # step the optimizers yourself
        self.generator = nn.Linear(8, 4)
        self.discriminator = nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        (real,) = batch
        opt_g, opt_d = self.optimizers()  # wrapped: their step() goes through the Trainer (hooks, counting)
        fake = self.generator(torch.randn(real.shape[0], 8))

        d_loss = F.softplus(self.discriminator(fake.detach())).mean() + F.softplus(-self.discriminator(real)).mean()
        opt_d.zero_grad()
        self.manual_backward(d_loss)  # not d_loss.backward(): applies the precision's loss scaling and the hooks
        opt_d.step()

        g_loss = F.softplus(-self.discriminator(fake)).mean()
        opt_g.zero_grad()
        self.manual_backward(g_loss)
        self.clip_gradients(opt_g, gradient_clip_val=1.0)  # Trainer(gradient_clip_val=...) is for automatic optimization
        opt_g.step()
        self.log_dict({"d_loss": d_loss, "g_loss": g_loss}, prog_bar=True)

    def configure_optimizers(self):
        return [torch.optim.Adam(self.generator.parameters(), lr=1e-3),
                torch.optim.Adam(self.discriminator.parameters(), lr=1e-3)]


trainer = ember.Trainer(max_epochs=1, logger=False, enable_checkpointing=False)
trainer.fit(GAN(), DataLoader(TensorDataset(torch.randn(64, 4)), batch_size=16))
print(trainer.global_step)  # 8: every optimizer.step() counts, 2 per batch
