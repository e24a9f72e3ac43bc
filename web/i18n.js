// Every UI string of the dashboard, in English and Simplified Chinese; the choice is kept in
// localStorage. Elements with data-i18n="key" get the string as text (never as HTML).
const strings = {
  en: {
    app: 'BlockFed', dashboard: 'Dashboard', predict: 'Predict', profile: 'Profile', logout: 'Log out',
    login: 'Log in', register: 'Register', username: 'User name', password: 'Password',
    'login.title': 'Log in to BlockFed', 'register.done': 'Registered: you can log in now.',
    tasks: 'Tasks', task: 'Task', name: 'Name', state: 'State', round: 'Round', participants: 'Participants',
    mode: 'Mode', price: 'Fee / pool', model: 'Model', dataset: 'Dataset', 'no.tasks': 'No tasks yet.',
    'create.title': 'Create a task', create: 'Create', description: 'Description', rounds: 'Rounds',
    fee: 'Fee per image (yuan)', pool: 'Reward pool (yuan)', base_fee: 'Fee per request (yuan)', rate: 'Price multiplier',
    value_images: 'Validation images for valuation', own_data_cap: 'Own-data weight cap (samples)',
    min_clients: 'Minimum participants', local_epochs: 'Local epochs', batch: 'Batch size', lr: 'Learning rate',
    round_timeout: 'Round timeout (s)', partition: 'Partition', strategy: 'Strategy', mu: 'FedProx mu', seed: 'Seed',
    optional: 'optional', created: 'Task created.', 'accuracy.title': 'Accuracy and loss per round',
    'val_acc': 'validation accuracy', 'test_acc': 'test accuracy', 'val_loss': 'validation loss',
    'contrib.title': 'Contributions (cumulative Shapley value)', user: 'User', shapley: 'Shapley', blocks: 'Blocks',
    samples: 'Samples', contributed: 'Contributed', status: 'Status', 'rounds.title': 'Round log', seconds: 'Seconds',
    result_hash: 'Result hash', cancel: 'Cancel task', cancelled: 'Task cancelled.', live: 'live updates',
    'predict.title': 'Pay for a prediction', 'choose.task': 'Model (completed task)', images: 'Images', top: 'Top classes',
    'predict.go': 'Classify', 'fee.line': 'Fee charged: {fee} yuan. Balance after: {balance} yuan.',
    'no.models': 'No completed task to predict with yet.', 'per.image': 'per image', error: 'Error',
    cash: 'Cash', available: 'available', held: 'held', coins: 'Coins', shares: 'Shares', history: 'History',
    operator: 'Operator', 'recharge.title': 'Recharge', amount: 'Amount (yuan)', recharge: 'Recharge',
    recharged: 'Recharged: cash is now {cash} yuan.', 'task.ledger': 'Task (ledger id)', share: 'Share',
    received: 'Fees received (yuan)', 'no.shares': 'No shares yet.', 'no.revenue': 'No fees received yet.', 'revenue.title': 'Fees received over time',
    'rewards.title': 'Reward payouts', 'no.rewards': 'No reward payouts yet.', seq: 'No.', time: 'Time', type: 'Type',
    kind: 'Kind', currency: 'Currency', before: 'Before', after: 'After', newest: 'Newest', older: 'Older',
    'tokens.title': 'API tokens', id: 'Id', created_at: 'Created', last_used: 'Last used', 'token.name': 'Token name',
    'token.create': 'Create token', 'token.once': 'This token is shown once: copy it now.', revoke: 'Revoke',
    'type.posted': 'posted', 'type.pending': 'held', 'type.post': 'captured', 'type.void': 'released', 'type.expire': 'expired',
    'kind.register_bonus': 'sign-up bonus', 'kind.recharge': 'recharge', 'kind.spend_coins': 'coins spent',
    'kind.task_fund': 'task funding', 'kind.task_refund': 'task refund', 'kind.reward': 'reward',
    'kind.usage_fee': 'prediction fee', 'kind.fee_payout': 'fee payout', 'kind.withdrawal': 'withdrawal',
    'operator.title': 'Operator', 'op.token': 'Operator token (HOME/operator.token)', 'op.use': 'Use', 'op.forget': 'Forget',
    'summary.title': 'Summary', 'summary.missing': 'This server has no summary yet (GET /api/v1/operator/summary).',
    chain_head: 'Chain head', entries: 'Ledger entries', pending_holds: 'Pending holds', pending_withdrawals: 'Pending withdrawals',
    posted: 'Posted', 'verify.title': 'Ledger verification', 'verify.run': 'Verify the ledger', verifying: 'Verifying…',
    'verify.ok': 'Every check passed.', 'verify.bad': 'Some checks failed.', pass: 'pass', fail: 'FAIL',
    transfers: 'Transfers', accounts: 'Accounts', users: 'Users', check: 'Check', result: 'Result', failures: 'Failures',
    detail: 'Detail', 'balances.title': 'Balances per currency and account kind',
    'deposit.title': 'Deposit (money received outside the platform)', ref: 'External reference', deposit: 'Deposit',
    deposited: 'Deposited: {user} now has {cash} yuan.',
    'acct.user_cash': 'users\' cash', 'acct.user_coin': 'users\' coins', 'acct.task_escrow': 'task escrow',
    'acct.task_clearing': 'task clearing', 'acct.platform_external': 'outside the platform', 'acct.platform_revenue': 'platform revenue',
    'contrib.rounds': 'Contributions (Shapley value per round, stacked)', aggregate_seconds: 'Aggregation (s)',
    value_seconds: 'Valuation (s)', valued: 'Valued', 'valued.yes': 'yes', 'valued.no': 'no',
    'withdraw.title': 'Withdrawals', withdraw: 'Withdraw', resolved: 'Resolved',
    'wd.pending': 'pending', 'wd.paid': 'paid out', 'wd.rejected': 'rejected',
    'live.on': 'on', 'live.off': 'off',
    split: 'Share of the settlement', drop: 'or drop images here',
    payouts: 'Payouts', 'available.col': 'Available', 'held.col': 'Held',
    language: '中文',
  },
  zh: {
    app: 'BlockFed', dashboard: '任务面板', predict: '预测', profile: '个人资料', logout: '退出登录',
    login: '登录', register: '注册', username: '用户名', password: '密码',
    'login.title': '登录 BlockFed', 'register.done': '注册成功，请登录。',
    tasks: '任务', task: '任务', name: '名称', state: '状态', round: '轮次', participants: '参与者',
    mode: '模式', price: '费用 / 奖金池', model: '模型', dataset: '数据集', 'no.tasks': '还没有任务。',
    'create.title': '创建任务', create: '创建', description: '描述', rounds: '轮数',
    fee: '每张图片费用（元）', pool: '奖金池（元）', base_fee: '每次请求费用（元）', rate: '价格倍数',
    value_images: '估值用验证图片数', own_data_cap: '自有数据权重上限（样本）',
    min_clients: '最少参与者', local_epochs: '本地轮数', batch: '批大小', lr: '学习率',
    round_timeout: '轮次超时（秒）', partition: '数据划分', strategy: '聚合策略', mu: 'FedProx mu', seed: '随机种子',
    optional: '可选', created: '任务已创建。', 'accuracy.title': '每轮准确率与损失',
    'val_acc': '验证准确率', 'test_acc': '测试准确率', 'val_loss': '验证损失',
    'contrib.title': '贡献（累计 Shapley 值）', user: '用户', shapley: 'Shapley 值', blocks: '数据块',
    samples: '样本', contributed: '已贡献', status: '状态', 'rounds.title': '轮次记录', seconds: '秒',
    result_hash: '结果哈希', cancel: '取消任务', cancelled: '任务已取消。', live: '实时更新',
    'predict.title': '付费预测', 'choose.task': '模型（已完成的任务）', images: '图片', top: '前几类',
    'predict.go': '识别', 'fee.line': '已扣费：{fee} 元。余额：{balance} 元。',
    'no.models': '还没有可用于预测的已完成任务。', 'per.image': '每张', error: '错误',
    cash: '现金', available: '可用', held: '冻结', coins: '代币', shares: '股份', history: '流水',
    operator: '运营者', 'recharge.title': '充值', amount: '金额（元）', recharge: '充值',
    recharged: '充值成功：现金余额 {cash} 元。', 'task.ledger': '任务（账本编号）', share: '股份',
    received: '已收费用（元）', 'no.shares': '还没有股份。', 'no.revenue': '还没有收到费用。', 'revenue.title': '费用收入走势',
    'rewards.title': '奖励发放', 'no.rewards': '还没有奖励发放。', seq: '序号', time: '时间', type: '类型',
    kind: '类别', currency: '币种', before: '变动前', after: '变动后', newest: '最新', older: '更早',
    'tokens.title': 'API 令牌', id: '编号', created_at: '创建时间', last_used: '最近使用', 'token.name': '令牌名称',
    'token.create': '创建令牌', 'token.once': '令牌只显示这一次，请立即复制。', revoke: '吊销',
    'type.posted': '已入账', 'type.pending': '冻结', 'type.post': '已扣款', 'type.void': '已解冻', 'type.expire': '已过期',
    'kind.register_bonus': '注册奖励', 'kind.recharge': '充值', 'kind.spend_coins': '代币支出',
    'kind.task_fund': '任务出资', 'kind.task_refund': '任务退款', 'kind.reward': '奖励',
    'kind.usage_fee': '预测费用', 'kind.fee_payout': '费用分成', 'kind.withdrawal': '提现',
    'operator.title': '运营者', 'op.token': '运营者令牌（HOME/operator.token）', 'op.use': '使用', 'op.forget': '清除',
    'summary.title': '概览', 'summary.missing': '此服务器尚无概览接口（GET /api/v1/operator/summary）。',
    chain_head: '哈希链头', entries: '账本条目', pending_holds: '未结冻结', pending_withdrawals: '待处理提现',
    posted: '已入账', 'verify.title': '账本校验', 'verify.run': '校验账本', verifying: '校验中…',
    'verify.ok': '全部检查通过。', 'verify.bad': '有检查未通过。', pass: '通过', fail: '未通过',
    transfers: '转账', accounts: '账户', users: '用户', check: '检查项', result: '结果', failures: '失败数',
    detail: '详情', 'balances.title': '按币种和账户类别的余额',
    'deposit.title': '入金（平台外收到的款项）', ref: '外部参考号', deposit: '入金',
    deposited: '入金成功：{user} 现有 {cash} 元。',
    'acct.user_cash': '用户现金', 'acct.user_coin': '用户代币', 'acct.task_escrow': '任务托管',
    'acct.task_clearing': '任务清算', 'acct.platform_external': '平台外部', 'acct.platform_revenue': '平台收入',
    'contrib.rounds': '贡献（每轮 Shapley 值，堆叠）', aggregate_seconds: '聚合（秒）',
    value_seconds: '估值（秒）', valued: '已估值', 'valued.yes': '是', 'valued.no': '否',
    'withdraw.title': '提现', withdraw: '提现', resolved: '处理时间',
    'wd.pending': '处理中', 'wd.paid': '已打款', 'wd.rejected': '已拒绝',
    'live.on': '已连接', 'live.off': '已断开',
    split: '结算份额', drop: '或将图片拖放到这里',
    payouts: '分成次数', 'available.col': '可用', 'held.col': '冻结',
    language: 'English',
  },
};

export function lang() { return localStorage.getItem('bf.lang') === 'zh' ? 'zh' : 'en'; }
export function setLang(l) { localStorage.setItem('bf.lang', l); }

// The string for key in the current language, with {name} replaced from vars.
export function t(key, vars) {
  let s = strings[lang()][key] ?? strings.en[key] ?? key;
  for (const [k, v] of Object.entries(vars || {})) s = s.replaceAll('{' + k + '}', String(v));
  return s;
}

export function applyI18n(root = document) {
  document.documentElement.lang = lang() === 'zh' ? 'zh-CN' : 'en';
  for (const el of root.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
}

// Numbers and money per language; money stays the server's decimal string, only grouped.
export function num(x, digits) {
  return new Intl.NumberFormat(lang() === 'zh' ? 'zh-CN' : 'en-US',
    digits === undefined ? {} : { minimumFractionDigits: digits, maximumFractionDigits: digits }).format(x);
}
export function money(s) {
  if (typeof s !== 'string' || !/^-?\d+(\.\d+)?$/.test(s)) return String(s ?? '');
  const [i, f] = s.split('.');
  const grouped = new Intl.NumberFormat(lang() === 'zh' ? 'zh-CN' : 'en-US').format(BigInt(i));
  return f ? grouped + '.' + f : grouped;
}
// A ledger time (seconds since 1970) as a date and time in the current language.
export function dateTime(sec) {
  return new Date(Number(sec) * 1000).toLocaleString(lang() === 'zh' ? 'zh-CN' : 'en-US');
}

// A server code's label (prefix + code, e.g. 'kind.' + 'fee_payout'); the code itself when the
// table has none (a newer server's code still shows).
export function label(prefix, code) {
  const k = prefix + code;
  return k in strings[lang()] || k in strings.en ? t(k) : String(code ?? '');
}

// Whether the table has key in language l (the browser test checks every key the pages use).
export function known(l, key) { return Object.hasOwn(strings[l] || {}, key); }
