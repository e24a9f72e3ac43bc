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
    language: '中文', 'csrf.lost': 'Your session cannot change anything in this tab: log in again.',
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
    language: 'English', 'csrf.lost': '此标签页的会话无法修改数据，请重新登录。',
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
